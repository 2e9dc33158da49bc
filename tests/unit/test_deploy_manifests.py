"""Offline checks of deploy/: every manifest parses, and what a cluster or a Docker engine would check first holds
(required fields, probes, resources, images, graceful shutdown, autoscalers), plus what only this repository knows
(every Procfile process is deployed and autoscaled, every queue a service consumes drives its autoscaler, every
environment variable a manifest sets is one the code reads, the broker definitions match the topology)."""
import base64
import glob
import hashlib
import json
import os
import re
import shlex

import pytest
import yaml

from unionhub_kit import catalog, config, topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")


def procfile():
    out = {}
    with open(os.path.join(DEPLOY, "Procfile")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, cmd = line.split(":", 1)
                out[name.strip()] = cmd.split()[-1]
    return out


PROCS = procfile()
SERVICES = sorted(n for n in PROCS if n != "gateway")


def k8s_docs():
    docs = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml"))):
        with open(path) as f:
            docs.extend((os.path.basename(path), d) for d in yaml.safe_load_all(f) if d)
    return docs


def by_kind(kind):
    return {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == kind}


def compose():
    with open(os.path.join(DEPLOY, "compose.yaml")) as f:
        return yaml.safe_load(f)


def known_env_names():
    """Names the code reads: nameko.yaml ${VAR:...}, config.SETTINGS, and every env lookup in the sources."""
    names = set(config.ENV_NAMES)
    with open(os.path.join(DEPLOY, "nameko.yaml")) as f:
        names |= set(re.findall(r"\$\{([A-Z0-9_]+)", f.read()))
    lookup = re.compile(r"""(?:environ\.get|environ\[|config\.get|get_int|get_float|getenv)\(?\s*["']([A-Z][A-Z0-9_]+)""")
    for pattern in ("unionhub_kit/**/*.py", "services/**/*.py", "gateway/**/*.py"):
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            with open(path, encoding="utf-8") as f:
                names |= set(lookup.findall(f.read()))
    with open(os.path.join(ROOT, "docs", "API.md"), encoding="utf-8") as f:  # the documented contract
        names |= set(re.findall(r"`([A-Z][A-Z0-9_]{3,})`", f.read()))
    return names


def test_every_yaml_in_deploy_parses():
    paths = glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True)
    assert len(paths) >= 7
    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        assert docs, path
    with open(os.path.join(DEPLOY, "rabbitmq", "definitions.json")) as f:
        json.load(f)


def test_generated_manifests_are_in_sync_with_the_code():
    from deploy import render_manifests
    assert render_manifests.main(["--check"]) == 0, "run: python deploy/render_manifests.py"


# ---- Dockerfile -------------------------------------------------------------------------------------------------
def dockerfile():
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_dockerfile_is_slim_non_root_and_installs_the_lock():
    lines = dockerfile()
    assert lines[0] == "FROM python:3.11-slim"
    run = " ".join(line for line in lines if line.startswith("RUN "))
    assert "pip install" in run and "requirements.lock" in run
    user = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    entry = json.loads([line for line in lines if line.startswith("ENTRYPOINT ")][0][len("ENTRYPOINT "):])
    assert entry == ["nameko", "run", "--config", "deploy/nameko.yaml"]
    cmd = json.loads([line for line in lines if line.startswith("CMD ")][0][len("CMD "):])
    assert cmd[0] in PROCS.values()
    assert any(line.startswith("STOPSIGNAL SIGTERM") for line in lines)


def test_dockerfile_copies_files_that_exist_and_everything_a_process_needs():
    copied = []
    for line in dockerfile():
        if line.startswith("COPY "):
            parts = [p for p in shlex.split(line)[1:] if not p.startswith("--")]
            for src in parts[:-1]:
                assert os.path.exists(os.path.join(ROOT, src)), "COPY %s: no such file" % src
                copied.append(src.rstrip("/"))
    for module in PROCS.values():
        assert module.split(".")[0] in copied, module
    assert "deploy/nameko.yaml" in copied and "unionhub_kit" in copied and "requirements.lock" in copied
    with open(os.path.join(DEPLOY, "Dockerfile.dockerignore")) as f:
        ignore = f.read()
    for src in copied:
        assert "!" + src in ignore or "!%s/**" % src in ignore, "%s is excluded from the build context" % src


# ---- compose ----------------------------------------------------------------------------------------------------
def test_compose_runs_every_process_with_a_healthcheck_and_can_scale():
    c = compose()
    svcs = c["services"]
    for name, module in PROCS.items():
        s = svcs[name]
        assert s["command"] == [module]
        assert s["image"] and s["build"]["dockerfile"] == "deploy/Dockerfile"
        assert os.path.exists(os.path.join(DEPLOY, s["build"]["context"], s["build"]["dockerfile"]))
        assert "container_name" not in s, "%s: a fixed name breaks --scale" % name
        assert s["healthcheck"]["test"][0] == "CMD"
        assert s["stop_grace_period"] and s["stop_signal"] == "SIGTERM"
        assert s["depends_on"]["mongo"]["condition"] == "service_healthy"
        assert s["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        if name == "gateway":
            assert "/readyz" in " ".join(s["healthcheck"]["test"])
            assert s["environment"]["GATEWAY_HOST"] == "0.0.0.0"
        else:
            assert "ports" not in s, "%s publishes a port: --scale %s=3 would collide" % (name, name)
            assert s["healthcheck"]["test"][1:5] == ["python", "-m", "unionhub_kit", "ping"]
            assert s["healthcheck"]["test"][5] == name


def test_compose_store_is_a_replica_set_and_broker_loads_definitions():
    svcs = compose()["services"]
    mongo = svcs["mongo"]
    assert mongo["image"].startswith("mongo:")
    assert "--replSet" in mongo["command"] and "rs0" in mongo["command"]
    check = " ".join(mongo["healthcheck"]["test"])
    assert "rs.initiate" in check and "isWritablePrimary" in check
    env = svcs["benefits"]["environment"]
    assert "replicaSet=rs0" in env["MONGO_URI"] and "@rabbitmq:5672" in env["AMQP_URI"]
    rabbit = svcs["rabbitmq"]
    assert "management" in rabbit["image"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in rabbit["volumes"] if v.startswith("./")}
    assert os.path.exists(os.path.join(DEPLOY, mounts["/etc/rabbitmq/definitions.json"]))
    conf_path = os.path.join(DEPLOY, mounts["/etc/rabbitmq/rabbitmq.conf"])
    with open(conf_path) as f:
        assert "definitions.local.path = /etc/rabbitmq/definitions.json" in f.read()
    user, password = re.match(r"amqp://([^:]+):([^@]+)@", env["AMQP_URI"]).groups()
    with open(os.path.join(DEPLOY, "rabbitmq", "definitions.json")) as f:
        defs = json.load(f)
    (u,) = [x for x in defs["users"] if x["name"] == user]
    raw = base64.b64decode(u["password_hash"])
    assert raw[4:] == hashlib.sha256(raw[:4] + password.encode()).digest(), "compose password != definitions"


def test_compose_and_k8s_set_only_environment_variables_the_code_reads():
    known = known_env_names()
    used = set()
    c = compose()
    for s in c["services"].values():
        used |= set((s.get("environment") or {}).keys())
    used |= set(c["x-env"])
    for _, d in k8s_docs():
        if d["kind"] == "ConfigMap":
            used |= set(d["data"])
        if d["kind"] == "Secret":
            used |= set(d.get("stringData") or d.get("data") or {})
        if d["kind"] == "Deployment":
            for ctr in d["spec"]["template"]["spec"]["containers"]:
                used |= {e["name"] for e in ctr.get("env", [])}
                # a secret key handed to the process under another name (each service's broker account)
                used -= {e["valueFrom"]["secretKeyRef"]["key"] for e in ctr.get("env", [])
                         if "secretKeyRef" in e.get("valueFrom", {})}
    unknown = sorted(used - known)
    assert not unknown, "set in manifests but read nowhere: %s" % unknown
    assert {"AMQP_URI", "MONGO_URI", "UNIONHUB_SECRET", "UNIONHUB_ADMIN_PASSWORD"} <= used


# ---- Kubernetes -------------------------------------------------------------------------------------------------
def test_every_k8s_object_has_the_required_fields():
    docs = k8s_docs()
    assert docs
    for path, d in docs:
        assert d.get("apiVersion") and d.get("kind"), path
        assert d["metadata"].get("name"), path
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "unionhub", (path, d["kind"])
    kinds = {d["kind"] for _, d in docs}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "HorizontalPodAutoscaler", "ScaledObject",
            "TriggerAuthentication", "Service", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize("name", sorted(PROCS))
def test_each_process_has_a_deployment_with_probes_resources_and_graceful_shutdown(name):
    deps = by_kind("Deployment")
    assert name in deps, "no Deployment for %s" % name
    d = deps[name]
    spec = d["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    (ctr,) = pod["containers"]
    assert ctr["image"] and ":" in ctr["image"] and not ctr["image"].endswith(":latest")
    assert ctr["args"] == [PROCS[name]]
    for probe in ("readinessProbe", "livenessProbe"):
        assert probe in ctr, "%s has no %s" % (name, probe)
        p = ctr[probe]
        if "httpGet" in p:
            port = p["httpGet"]["port"]
            assert port in {x["name"] for x in ctr["ports"]} | {x["containerPort"] for x in ctr["ports"]}
        else:
            assert p["exec"]["command"][:4] == ["python", "-m", "unionhub_kit", "ping"]
            assert p["exec"]["command"][4] == name
            assert p["timeoutSeconds"] >= 5
    for kind in ("requests", "limits"):
        assert set(ctr["resources"][kind]) >= {"cpu", "memory"}
    assert ctr["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    prestop = int(ctr["lifecycle"]["preStop"]["exec"]["command"][1])
    assert prestop + 20 <= pod["terminationGracePeriodSeconds"], "no time left to finish workers after preStop"
    refs = {next(iter(e.values()))["name"] for e in ctr["envFrom"]}
    assert refs == {"unionhub-config", "unionhub-secrets"}
    assert set(by_kind("ConfigMap")) >= {"unionhub-config"} and set(by_kind("Secret")) >= {"unionhub-secrets"}
    mounts = {m["name"] for m in ctr.get("volumeMounts", [])}
    assert mounts <= {v["name"] for v in pod.get("volumes", [])}
    if ctr["securityContext"].get("readOnlyRootFilesystem"):
        assert "/tmp" in {m["mountPath"] for m in ctr["volumeMounts"]}


def test_gateway_scales_on_cpu_and_is_exposed():
    hpa = by_kind("HorizontalPodAutoscaler")["gateway"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] <= 90
    assert 1 < hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    svc = by_kind("Service")["gateway"]
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "gateway"}
    dep = by_kind("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert dep["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert dep["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_scales_on_the_depth_of_every_queue_it_consumes(name):
    scaled = by_kind("ScaledObject")
    assert name in scaled, "no ScaledObject for %s" % name
    so = scaled[name]["spec"]
    assert so["scaleTargetRef"]["name"] == name
    assert 1 <= so["minReplicaCount"] < so["maxReplicaCount"]
    queues = {t["metadata"]["queueName"] for t in so["triggers"] if t["type"] == "rabbitmq"}
    expected = {"rpc-%s" % name} | {topology.queue_name(s) for s in topology.SUBSCRIPTIONS if s.consumer == name}
    assert queues == expected
    auths = by_kind("TriggerAuthentication")
    for t in so["triggers"]:
        if t["type"] == "rabbitmq":
            assert int(t["metadata"]["value"]) > 0 and t["metadata"]["mode"] == "QueueLength"
            auth = auths[t["authenticationRef"]["name"]]
            (ref,) = auth["spec"]["secretTargetRef"]
            assert ref["parameter"] == "host"
            assert ref["key"] in by_kind("Secret")[ref["name"]]["stringData"]
    pdb = by_kind("PodDisruptionBudget")[name]
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}


# ---- RabbitMQ definitions ---------------------------------------------------------------------------------------
def definitions():
    with open(os.path.join(DEPLOY, "rabbitmq", "definitions.json")) as f:
        return json.load(f)


def test_definitions_declare_durable_event_exchanges_and_every_topology_queue_as_the_code_does():
    d = definitions()
    ex = {e["name"]: e for e in d["exchanges"]}
    for svc in catalog.services():
        e = ex["%s.events" % svc]
        assert e["type"] == "topic" and e["durable"] and not e["auto_delete"]
    assert ex["nameko-rpc"]["durable"]
    queues = {q["name"]: q for q in d["queues"]}
    for sub in topology.SUBSCRIPTIONS:
        for q in topology.queues_for(sub):
            assert q.name in queues
            # a declare by the code with other arguments would fail with PRECONDITION_FAILED
            assert queues[q.name]["arguments"] == dict(q.queue_arguments or {}) and queues[q.name]["durable"]
    bound = {(b["source"], b["destination"], b["routing_key"]) for b in d["bindings"]}
    for sub in topology.SUBSCRIPTIONS:
        for src, event in topology.expand(sub.bindings):
            # an on-demand queue (webhooks) is bound at run time to what is wanted, never by the definitions
            assert (("%s.events" % src, topology.queue_name(sub), event) in bound) != sub.on_demand


def test_definition_policies_match_the_queues_they_are_meant_for():
    d = definitions()
    pol = {p["name"]: p for p in d["policies"]}
    names = topology.all_queue_names()
    dlx = pol["uh-event-queues"]["definition"]["dead-letter-exchange"]
    assert dlx in {e["name"] for e in d["exchanges"]}
    assert any(b["source"] == dlx for b in d["bindings"])

    def winner(queue):
        matching = [p for p in d["policies"] if p["apply-to"] in ("queues", "all") and re.search(p["pattern"], queue)]
        return max(matching, key=lambda p: p["priority"])["name"] if matching else None
    for q in names:
        if q.endswith(".dlq"):
            assert winner(q) == "uh-dead-letter-queues", q
        elif q.endswith(".retry"):
            # the retry queue's own dead-letter arguments send messages back after their backoff: no policy
            assert winner(q) is None, q
        else:
            assert winner(q) == "uh-event-queues", q
    assert winner("rpc-benefits") == "uh-rpc-queues"
    assert pol["uh-rpc-queues"]["definition"]["message-ttl"] >= 1000 * int(config.get("RPC_TIMEOUT"))


def test_each_service_has_its_own_broker_account_and_compose_uses_it():
    from urllib.parse import urlparse
    from deploy import render_manifests
    defs = render_manifests.definitions()
    users = {u["name"]: u for u in defs["users"]}
    c = compose()
    for name in procfile():
        uri = urlparse(c["services"][name]["environment"]["AMQP_URI"])
        assert uri.username == "uh-%s" % name and uri.username in users, name
        raw = base64.b64decode(users[uri.username]["password_hash"])
        assert raw[4:] == hashlib.sha256(raw[:4] + uri.password.encode()).digest(), name
        assert not users[uri.username]["tags"], "a service account is no broker administrator"
    [integrator] = [p for p in defs["permissions"] if p["user"] == "integrator"]
    assert "nameko-rpc" not in integrator["read"] and integrator["write"] == integrator["configure"]


def test_the_broker_has_the_consistent_hash_plugin_and_the_accounts_may_use_the_affinity_names():
    """``unionhub_kit.affinity``: compose's broker enables the plugin (beside the management and Prometheus plugins
    the image has), ``make run`` and the tests enable it, and every service account may declare, write and read
    the affinity exchange and a replica's queue; the integrator may not."""
    from deploy import render_manifests, stack
    from unionhub_kit import affinity
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose()["services"]["rabbitmq"]["volumes"]
              if v.startswith("./")}
    with open(os.path.join(DEPLOY, mounts["/etc/rabbitmq/enabled_plugins"])) as f:
        text = f.read().strip()
    assert text.startswith("[") and text.endswith("].")
    assert set(text[1:-2].split(",")) >= {"rabbitmq_management", "rabbitmq_prometheus",
                                          "rabbitmq_consistent_hash_exchange"}
    assert {"rabbitmq_management", "rabbitmq_consistent_hash_exchange"} <= set(stack.PLUGINS)
    names = [affinity.exchange_name("benefits"), affinity.queue_name("benefits", "0123abcd")]
    for user, _, configure, write, read in render_manifests.broker_accounts():
        for name in names:
            allowed = [bool(re.match(p, name)) for p in (configure, write, read)]
            if user == render_manifests.INTEGRATOR_USER:
                assert not any(allowed), name
            else:
                assert all(allowed), (user, name)

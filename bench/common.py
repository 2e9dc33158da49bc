"""What every benchmark needs: a stack started the way the end-to-end tests start it, a concurrent load driver,
percentiles, tokens, and JSON result files.

The benchmark process is monkey-patched by eventlet (as nameko services and the test suite are): the load driver's
"threads" are green threads on keep-alive ``http.client`` connections, which leaves far more CPU to the server
processes than OS threads fighting over the GIL would.

    from bench import common
    with common.stack() as st:                       # RabbitMQ vhost + SecantusDB + every Procfile process
        res = common.http_load(lambda c, i: c.get("/api/v1/campaigns"), concurrency=32, duration=10)
        common.write_result("my_bench", {"campaigns": res})

Sizes come from the environment so ``make bench`` finishes in a few minutes (``BENCH_DURATION`` seconds per load
phase, ``BENCH_CONCURRENCY``; each benchmark documents its own). ``BENCH_MONGO_URI`` / ``BENCH_AMQP_URI`` point the
benchmarks at an existing store / broker instead of starting SecantusDB and a fresh vhost.
"""
import eventlet

eventlet.monkey_patch()

import contextlib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import uuid  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import requests  # noqa: E402

from deploy.stack import Stack, free_port  # noqa: E402
from unionhub_kit import broker, config, tokens, topology  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "bench", "results")
import logging  # noqa: E402

logging.getLogger("amqp").setLevel(logging.ERROR)  # "Received method ... during closing channel" on proxy close
ADMIN_PASSWORD = "Admin-Test-Passw0rd"  # = tests.e2e.helpers.ADMIN_PASSWORD, so those helpers work here


# ---- sizes from the environment ---------------------------------------------------------------------------------
def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def env_float(name, default):
    v = os.environ.get(name)
    return float(v) if v not in (None, "") else default


def duration(default=10.0):
    return env_float("BENCH_DURATION", default)


def concurrency(default=32):
    return env_int("BENCH_CONCURRENCY", default)


def say(*args):
    print(*args, file=sys.stderr, flush=True)


# ---- statistics -------------------------------------------------------------------------------------------------
def percentile(sorted_values, q):
    """Nearest-rank percentile of an already sorted list (``q`` in 0..100)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def percentiles(samples):
    """Latency summary in milliseconds of ``samples`` (seconds)."""
    s = sorted(samples)
    if not s:
        return {"n": 0, "mean_ms": None, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ms = lambda v: round(v * 1000.0, 3)  # noqa: E731
    return {"n": len(s), "mean_ms": ms(sum(s) / len(s)), "p50_ms": ms(percentile(s, 50)),
            "p95_ms": ms(percentile(s, 95)), "p99_ms": ms(percentile(s, 99)), "max_ms": ms(s[-1])}


# ---- concurrent drivers -----------------------------------------------------------------------------------------
def run_concurrent(call, concurrency=32, duration=None, total=None, setup=None, teardown=None, warmup=0.0):
    """Run ``call(state, i)`` from ``concurrency`` green threads until ``duration`` seconds or ``total`` calls.

    ``setup()`` makes each thread's ``state`` (a connection, a token ...). ``call`` returns a status (anything
    hashable; ``True``/2xx count as ok) or raises (counted as an error). Returns throughput, latency percentiles of
    every call and a count per status. ``warmup`` seconds of calls are made first and not counted.
    """
    if duration is None and total is None:
        raise ValueError("give duration or total")
    lat, statuses, errors = [], {}, []
    counter = [0]
    stop_at = [None]

    def worker():
        state = setup() if setup else None
        try:
            if warmup:
                end = time.perf_counter() + warmup
                while time.perf_counter() < end:
                    try:
                        call(state, -1)
                    except Exception:
                        pass
            while True:
                if total is not None:
                    if counter[0] >= total:
                        return
                    i = counter[0]
                    counter[0] += 1
                else:
                    i = counter[0]
                    counter[0] += 1
                    if time.perf_counter() >= stop_at[0]:
                        return
                t0 = time.perf_counter()
                try:
                    st = call(state, i)
                except Exception as exc:
                    st = "error:%s" % type(exc).__name__
                    if len(errors) < 5:
                        errors.append(repr(exc)[:300])
                lat.append(time.perf_counter() - t0)
                statuses[st] = statuses.get(st, 0) + 1
        finally:
            if teardown and state is not None:
                teardown(state)

    pool = eventlet.GreenPool(concurrency)
    started = time.perf_counter()
    stop_at[0] = started + (warmup or 0) + (duration or 0)
    threads = [pool.spawn(worker) for _ in range(concurrency)]
    for t in threads:
        t.wait()
    elapsed = time.perf_counter() - started - (warmup or 0)
    ok = sum(n for s, n in statuses.items() if s is True or (isinstance(s, int) and 200 <= s < 300))
    res = {"concurrency": concurrency, "requests": len(lat), "ok": ok, "elapsed_s": round(elapsed, 3),
           "per_s": round(len(lat) / elapsed, 1) if elapsed > 0 else None,
           "ok_per_s": round(ok / elapsed, 1) if elapsed > 0 else None,
           "status": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))}}
    res.update(percentiles(lat))
    if errors:
        res["sample_errors"] = errors
    return res


def sequential(call, n):
    """Latency of ``n`` calls one at a time (``call(i)``)."""
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        lat.append(time.perf_counter() - t0)
    res = percentiles(lat)
    res["per_s"] = round(len(lat) / sum(lat), 1) if lat else None
    return res


class Http:
    """A keep-alive HTTP/1.1 connection to the gateway (one per load thread)."""

    def __init__(self, base_url, token=None, timeout=30):
        u = urllib.parse.urlparse(base_url)
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self.token = token
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        """Return ``(status, parsed JSON or raw bytes)``."""
        h = {"Accept": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer %s" % self.token
        if body is not None:
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=h)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                break
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt:
                    raise
        ctype = resp.getheader("Content-Type", "")
        if "json" in ctype and data:
            try:
                return resp.status, json.loads(data)
            except ValueError:
                pass
        return resp.status, data

    def get(self, path, **kw):
        return self.request("GET", path, **kw)[0]

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)[0]

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn = None


def http_load(call, base_url, concurrency=32, duration=None, total=None, token=None, tokens=None, warmup=0.0):
    """``call(http, i)`` from ``concurrency`` keep-alive connections; ``tokens`` gives each connection its own."""
    it = iter(tokens) if tokens is not None else None

    def setup():
        return Http(base_url, token=next(it) if it is not None else token)
    return run_concurrent(call, concurrency=concurrency, duration=duration, total=total, setup=setup,
                          teardown=lambda h: h.close(), warmup=warmup)


# ---- tokens -----------------------------------------------------------------------------------------------------
def staff_token(role="union_admin", scope="51", **claims):
    """A staff token signed with this process's UNIONHUB_SECRET (the stack shares it)."""
    return tokens.issue("bench-%s" % uuid.uuid4().hex[:8], role, scope=scope, **claims)


def admin_token(st):
    """The bootstrap admin's token through the real login route."""
    r = requests.post(st.url + "/api/v1/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD},
                      timeout=15)
    r.raise_for_status()
    return r.json()["access_token"]


def new_members(st, n, concurrency=8, occupation_group="courier"):
    """``n`` active members the way the app makes them (OTP by SMS, token, join an auto-approve union), joined
    ``concurrency`` at a time; returns ``[(token, member_json, phone)]``. Needs membership and notify."""
    from tests.e2e import helpers
    helpers.auto_union(st)
    out = []

    def one(_):
        out.append(helpers.new_member(st, occupation_group=occupation_group))
    pool = eventlet.GreenPool(concurrency)
    for i in range(n):
        pool.spawn_n(one, i)
    pool.waitall()
    return out


def rfc3339_in(seconds):
    import datetime
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def create_campaign(st, admin, quota=1000, per_member_limit=1, starts_in=-5, title=None, **extra):
    """A merchant (once per stack) and a live campaign through the gateway; returns the campaign JSON."""
    from tests.e2e import helpers
    merchant = getattr(st, "_bench_merchant", None)
    if merchant is None:
        r = requests.post(st.url + "/api/v1/merchants", json={"name": "蜀味餐饮 bench", "uscc": helpers.new_uscc(),
                                                              "region_code": "510104"},
                          headers=helpers.auth(admin), timeout=15)
        assert r.status_code == 201, r.text
        merchant = st._bench_merchant = r.json()
    body = {"title": title or "午餐满30减10 %s" % uuid.uuid4().hex[:6], "merchant_id": merchant["id"],
            "face_value_cents": 1000, "min_spend_cents": 3000, "quota": quota, "per_member_limit": per_member_limit,
            "claim_starts_at": rfc3339_in(starts_in), "claim_ends_at": rfc3339_in(3600 * 24),
            "redeem_ends_at": rfc3339_in(3600 * 24 * 30), "eligibility": {}, "welcome": False}
    body.update(extra)
    r = requests.post(st.url + "/api/v1/campaigns", json=body, headers=helpers.auth(admin), timeout=15)
    assert r.status_code == 201, r.text
    return r.json()


# ---- the stack --------------------------------------------------------------------------------------------------
def mgmt(method, path, **kw):
    base = config.get("RABBIT_API_URI")
    u = urllib.parse.urlparse(base)
    url = "%s://%s:%s/api/%s" % (u.scheme, u.hostname, u.port or 15672, path)
    r = requests.request(method, url, auth=(u.username or "guest", u.password or "guest"), timeout=15, **kw)
    if r.status_code >= 400 and not (method == "DELETE" and r.status_code == 404):
        r.raise_for_status()
    return r


def create_vhost(name, user="guest"):
    q = urllib.parse.quote(name, safe="")
    mgmt("PUT", "vhosts/%s" % q)
    mgmt("PUT", "permissions/%s/%s" % (q, user), json={"configure": ".*", "write": ".*", "read": ".*"})


def delete_vhost(name):
    mgmt("DELETE", "vhosts/%s" % urllib.parse.quote(name, safe=""))


def start_store(data_dir, log_dir):
    """SecantusDB as its own process on a free port, started as ``make run`` starts it (same cache sizing);
    return ``(uri, process)``."""
    st = Stack(log_dir=log_dir, say=lambda *a: None)
    uri = st.start_store(data_dir, free_port())
    return uri, st.store_proc


class BenchStack:
    """A running stack: ``url`` (gateway), ``env`` (what every process got), ``db(service)``, ``logs()``."""

    def __init__(self, stack, url, env, vhost, store_proc, tmp):
        self.stack, self.url, self.env, self.vhost = stack, url, env, vhost
        self.amqp_uri, self.mongo_uri = env["AMQP_URI"], env["MONGO_URI"]
        self.prefix = env["UNIONHUB_DB_PREFIX"]
        self.log_dir = stack.log_dir
        self._store_proc, self._tmp = store_proc, tmp
        self._client = None

    @property
    def mongo(self):
        if self._client is None:
            import pymongo
            self._client = pymongo.MongoClient(self.mongo_uri, tz_aware=True, maxPoolSize=200)
        return self._client

    def db(self, service):
        return self.mongo[config.db_name(service, {"DB_PREFIX": self.prefix})]

    def nameko_config(self, **extra):
        return config.nameko_config(AMQP_URI=self.amqp_uri, MONGO_URI=self.mongo_uri, DB_PREFIX=self.prefix,
                                    **extra)

    def replicas(self):
        return {name: len(ps) for name, ps in self.stack.procs.items()}

    def logs(self):
        out = []
        for name in sorted(os.listdir(self.log_dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.log_dir, name), encoding="utf-8", errors="replace") as f:
                    out.append(f.read())
        return "\n".join(out)

    def sms_outbox(self):
        """Lines of the development SMS sink (what ``tests.e2e.helpers`` reads login codes from)."""
        path = self.env["SMS_SINK_FILE"]
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def stop(self):
        if self._client is not None:
            self._client.close()
            self._client = None
        self.stack.stop()
        if self._store_proc is not None:
            self._store_proc.terminate()
            try:
                self._store_proc.wait(15)
            except subprocess.TimeoutExpired:
                self._store_proc.kill()
        if self.vhost:
            try:
                delete_vhost(self.vhost)
            except Exception:
                pass
        if self._tmp and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self._tmp, ignore_errors=True)


def start_stack(replicas=None, services=None, extra_env=None, wait=180):
    """Start RabbitMQ vhost + store + every Procfile process (or ``services``); return a ``BenchStack``."""
    from deploy.stack import ensure_rabbitmq
    tmp = tempfile.mkdtemp(prefix="uh-bench-")
    log_dir = os.path.join(tmp, "log")
    os.makedirs(log_dir)
    amqp = os.environ.get("BENCH_AMQP_URI")
    vhost = None
    if not amqp:
        if not ensure_rabbitmq(config.get("AMQP_URI"), say=say):
            raise RuntimeError("RabbitMQ is not available")
        vhost = "uh_bench_%s" % uuid.uuid4().hex[:8]
        create_vhost(vhost)
        amqp = "amqp://guest:guest@localhost:5672/%s" % vhost
    store_proc = None
    mongo_uri = os.environ.get("BENCH_MONGO_URI")
    if not mongo_uri:
        mongo_uri, store_proc = start_store(os.path.join(tmp, "store"), log_dir)
    if os.environ.get("BENCH_JOURNALED"):  # every write acknowledged once journaled (what issue 11 makes the default)
        mongo_uri += ("&" if "?" in mongo_uri else "?") + "w=majority&journal=true"
    port = free_port()
    env = {
        "AMQP_URI": amqp,
        "MONGO_URI": mongo_uri,
        "UNIONHUB_DB_PREFIX": "b%s" % uuid.uuid4().hex[:8],
        "GATEWAY_PORT": str(port),
        "UNIONHUB_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "SMS_SINK_FILE": os.path.join(log_dir, "sms.jsonl"),
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "WEBHOOK_ALLOW_PRIVATE": "1",
    }
    env.update(extra_env or {})
    stack = Stack(env, log_dir=log_dir, replicas=replicas, services=services, say=say)
    try:
        topology.declare_uri(amqp)
        stack.start_services()
        if services is None or "gateway" in services:
            stack.wait_ready(wait)
    except Exception:
        stack.stop()
        if store_proc is not None:
            store_proc.kill()
        if vhost:
            delete_vhost(vhost)
        raise
    return BenchStack(stack, "http://127.0.0.1:%d" % port, env, vhost, store_proc, tmp)


@contextlib.contextmanager
def stack(**kw):
    st = start_stack(**kw)
    try:
        yield st
    finally:
        st.stop()


def queue_depth(st, queue):
    """Messages ready + unacked in ``queue`` of the stack's vhost (management API)."""
    vhost = broker.vhost_of(st.amqp_uri)
    r = mgmt("GET", "queues/%s/%s" % (urllib.parse.quote(vhost, safe=""), urllib.parse.quote(queue, safe="")))
    return r.json().get("messages", 0) if r.ok else 0


# ---- CPU cost per request ----------------------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[2]), (int(rest[11]) + int(rest[12])) / _TICK  # pgrp, utime + stime
    except (OSError, IndexError, ValueError):
        return None, 0.0


def _rabbit_pid():
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if b"beam.smp" in f.read() and b"rabbit" in open("/proc/%s/cmdline" % pid, "rb").read():
                        return int(pid)
            except OSError:
                pass
    return None


def opcounters(st):
    try:
        return dict(st.mongo.admin.command("serverStatus").get("opcounters") or {})
    except Exception:
        return None


class CpuMeter:
    """CPU seconds used by each process of a stack (services by process group, the store, RabbitMQ, this driver).

    The broker is shared with whatever else runs on the machine, so its figure is an upper bound."""

    def __init__(self, st, groups=None):
        self.groups = {}
        for name, procs in (st.stack.procs if groups is None else groups).items():
            for p in procs:
                self.groups.setdefault(name, []).append(p.pid)
        self.singles = {"client": os.getpid()}
        if st._store_proc is not None:
            self.singles["store"] = st._store_proc.pid
        rabbit = _rabbit_pid()
        if rabbit:
            self.singles["broker"] = rabbit

    def snapshot(self):
        by_group = {}
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                pgrp, cpu = _stat(pid)
                if pgrp is not None:
                    by_group[pgrp] = by_group.get(pgrp, 0.0) + cpu
        out = {name: sum(by_group.get(pg, 0.0) for pg in pgs) for name, pgs in self.groups.items()}
        for name, pid in self.singles.items():
            out[name] = _stat(pid)[1]
        return out

    @staticmethod
    def per_request(before, after, requests):
        """CPU milliseconds per request of each component between two snapshots."""
        if not requests:
            return {}
        return {k: round((after[k] - before.get(k, 0.0)) * 1000.0 / requests, 3) for k in after
                if after[k] - before.get(k, 0.0) > 0}


def measured_load(st, load, idle_seconds=3.0, groups=None):
    """Run ``load()`` (returns a ``run_concurrent`` result) and add ``cpu_ms_per_request`` by component.

    The CPU each component burns while idle (pollers; on a shared machine, other people's use of the broker) is
    measured for ``idle_seconds`` first and subtracted, so the figure is the marginal cost of one request."""
    meter = CpuMeter(st, groups)
    a, oa = meter.snapshot(), opcounters(st)
    time.sleep(idle_seconds)
    b, ob = meter.snapshot(), opcounters(st)
    t0 = time.perf_counter()
    res = load()
    elapsed = time.perf_counter() - t0
    c, oc = meter.snapshot(), opcounters(st)
    n = res.get("ok") or res.get("requests")
    if oa and ob and oc and n:  # store operations per request (what sizes a MongoDB primary)
        res["store_ops_per_request"] = {k: round(max(0.0, (oc[k] - ob[k]) - (ob[k] - oa[k]) / idle_seconds * elapsed)
                                                 / n, 2) for k in oc}
    idle = {k: (b[k] - a.get(k, 0.0)) / idle_seconds for k in b}
    res["cpu_ms_per_request"] = {k: round(max(0.0, (c[k] - b.get(k, 0.0)) - idle.get(k, 0.0) * elapsed)
                                          * 1000.0 / n, 3) for k in c if n} if n else {}
    res["cpu_idle_share"] = {k: round(v, 3) for k, v in idle.items() if v > 0.005}
    res["cpu_cores_busy"] = {k: round((c[k] - b.get(k, 0.0)) / elapsed, 3) for k in c}
    return res


# ---- results ----------------------------------------------------------------------------------------------------
def machine():
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def write_result(name, data):
    """Write ``bench/results/<name>.json`` (figures plus when and where) and return its path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    doc = {"benchmark": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
    doc.update(data)
    path = os.path.join(RESULTS_DIR, "%s.json" % name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False, default=str)
    os.replace(tmp, path)
    return path


def read_result(name):
    path = os.path.join(RESULTS_DIR, "%s.json" % name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def table(rows, headers):
    """A plain-text table."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)

"""Flash grab (抢券): N members claim on one campaign of quota Q at once, C connections, through the gateway; run with
one benefits replica and again with two. A benchmark that prints figures, not a test.

For each replica count it starts a fresh stack (every Procfile process, its own broker vhost and database prefix),
publishes ``member_joined`` for N members (so benefits and notify project them, as after real joins), mints each a
token, warms up on another campaign, then lets all N claim the grab campaign at concurrency C. It reports:

* claims/s over all N requests and p50/p95/p99 latency (201 and 409 alike), and the same for the 201s alone while
  stock lasted (the claim path proper: guarded count, coupon, outbox event, stock, in one transaction);
* issued coupons (must equal Q), the largest number any member holds (must be 1), 201/409 counts, sold-out events;
* the CPU each process spent per request (the benchmark client's own included) and the whole machine's busy cores
  during the grab: when it is near 2.0 on these 2-core machines, a second replica has no CPU to add;
* the same run's raw figures: nameko RPC round trips/s (``ClusterRpcProxy`` calling ``benefits.ping``, 32 in
  flight) and raw store ``find_one_and_update``/s (32 green threads, ``$inc`` on a scratch collection), and the
  ratios of claims/s to them.

    python -m bench.flash_grab
    FLASH_MEMBERS=1000 FLASH_QUOTA=250 FLASH_CONCURRENCY=32 FLASH_REPLICAS=1 python -m bench.flash_grab

A grab lasts a few seconds, so one grab's rate is noisy on these machines: each stack runs ``FLASH_ROUNDS`` (5)
grabs, each of a fresh campaign by all N members, and reports the round of median rate (every round's rate and
whether every round issued exactly the quota, at most one per member, are recorded beside it). The stacks run
side by side and take turns (round 1 on one replica, round 1 on two, round 2 on one, ...: ``run_interleaved``), so
that a slower minute of the machine does not fall on one replica count alone.

Store and broker: ``MONGO_URI`` (or ``BENCH_MONGO_URI``) if set, otherwise a SecantusDB started for the run;
RabbitMQ at ``AMQP_URI`` with a fresh vhost (``BENCH_AMQP_URI`` to use one as it is). Figures go to
``bench/results/flash_grab.json``.
"""
from bench import common  # noqa: I001  (monkey-patches first)

import datetime  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import eventlet  # noqa: E402
from nameko.standalone.events import event_dispatcher  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from unionhub_kit import clock, events, ids, tokens  # noqa: E402

RAW_CONCURRENCY = 32


def settings():
    return {"members": common.env_int("FLASH_MEMBERS", 2000), "quota": common.env_int("FLASH_QUOTA", 500),
            "concurrency": common.env_int("FLASH_CONCURRENCY", 64),
            "replicas": [int(r) for r in os.environ.get("FLASH_REPLICAS", "1,2").split(",") if r.strip()],
            "raw_seconds": common.env_float("BENCH_DURATION", 5.0), "rounds": max(1, common.env_int("FLASH_ROUNDS", 5))}


# ---- set-up ---------------------------------------------------------------------------------------------------
def http_ok(h, method, path, body=None, want=(200, 201)):
    status, doc = h.request(method, path, body=body)
    if status not in want:
        raise RuntimeError("%s %s -> %s %s" % (method, path, status, doc))
    return doc


def make_campaign(h, merchant_id, title, quota):
    now = clock.now()
    return http_ok(h, "POST", "/api/v1/campaigns", {
        "title": title, "merchant_id": merchant_id, "face_value_cents": 1000, "min_spend_cents": 3000, "quota": quota,
        "per_member_limit": 1, "claim_starts_at": events.rfc3339(now - datetime.timedelta(minutes=1)),
        "claim_ends_at": events.rfc3339(now + datetime.timedelta(hours=2)),
        "redeem_ends_at": events.rfc3339(now + datetime.timedelta(days=7)),
        "eligibility": {"region_codes": ["5101"], "occupation_groups": [], "union_ids": []}, "welcome": False})


def joined(user_id, n):
    phone = "139%08d" % n
    union_code = "510104%04d" % (1 + n % 20)
    data = {"member_id": "mbr_" + user_id, "user_id": user_id, "union_id": "un_" + union_code,
            "union_code": union_code, "region_code": "510104", "occupation_group": random.choice(
                ["courier", "delivery_rider", "truck_driver", "ride_hailing_driver"]), "status": "active",
            "card_no": "SC%08d" % n, "joined_at": events.rfc3339(clock.now()),
            "phone_masked": ids.mask_phone(phone)}
    return events.build("membership", "member_joined", data, subject=data["member_id"])


def wait_until(what, fn, timeout=600):
    deadline = time.time() + timeout
    while not fn():
        if time.time() > deadline:
            raise RuntimeError("gave up waiting for %s" % what)
        time.sleep(0.5)


def project_members(st, n):
    """N members as membership would announce them; returns their user ids once benefits has them all."""
    users = ["usr_%s" % uuid.uuid4().hex[:16] for _ in range(n)]
    dispatch = event_dispatcher({"AMQP_URI": st.amqp_uri, "serializer": "json"})
    for i, u in enumerate(users):
        dispatch("membership", "member_joined", joined(u, i))
    members = st.db("benefits").members
    wait_until("the member projection", lambda: members.count_documents({}) >= n)
    # notify projects them too (and sends its welcome): let it finish before anything is measured
    wait_until("notify's member_joined backlog", lambda: common.queue_depth(
        st, "evt-membership-member_joined--notify.on_member_joined") == 0)
    return users


def quiet(st):
    """No outbox backlog in benefits and no coupon event waiting in notify."""
    outbox = st.db("benefits").outbox
    wait_until("quiet", lambda: outbox.count_documents({"published_at": None}) == 0 and common.queue_depth(
        st, "evt-benefits-coupon_claimed--notify.on_coupon_claimed") == 0)


# ---- the grab -------------------------------------------------------------------------------------------------
def grab(st, campaign_id, user_tokens, concurrency):
    """Every token claims once; ``(started, [(t0, t1, status, code)])``."""
    path = "/api/v1/campaigns/%s/claims" % campaign_id
    queue = list(user_tokens)
    samples = []

    def worker():
        h = common.Http(st.url)
        try:
            while queue:
                token = queue.pop()
                t0 = time.perf_counter()
                status, doc = h.request("POST", path, headers={"Authorization": "Bearer %s" % token})
                # a problem document's code only: the ``code`` of a 201 is the coupon's secret
                code = doc.get("code") if status >= 400 and isinstance(doc, dict) else None
                samples.append((t0, time.perf_counter(), status, code))
        finally:
            h.close()
    started = time.perf_counter()
    pool = eventlet.GreenPool(concurrency)
    for _ in range(concurrency):
        pool.spawn(worker)
    pool.waitall()
    return started, samples


def summarise(started, samples, quota):
    ended = max(s[1] for s in samples)
    res = {"requests": len(samples), "elapsed_s": round(ended - started, 3),
           "claims_per_s": round(len(samples) / (ended - started), 1)}
    res.update(common.percentiles([t1 - t0 for t0, t1, _, _ in samples]))
    by = {}
    for _, _, status, code in samples:
        key = "%s %s" % (status, code) if code else str(status)
        by[key] = by.get(key, 0) + 1
    res["outcomes"] = by
    issued = sorted(s for s in samples if s[2] == 201)
    if issued:
        stock_gone = max(s[1] for s in issued)
        lasted = {"while_stock_lasted_s": round(stock_gone - started, 3),
                  "successful_claims_per_s": round(len(issued) / (stock_gone - started), 1)}
        lasted.update(common.percentiles([t1 - t0 for t0, t1, _, _ in issued]))
        res["claim_path"] = lasted
    return res


def verify(st, campaign_id, quota):
    coupons = st.db("benefits").coupons
    per_member = {}
    for cp in coupons.find({"campaign_id": campaign_id}, {"user_id": 1}):
        per_member[cp["user_id"]] = per_member.get(cp["user_id"], 0) + 1
    left = sum(b["left"] for b in st.db("benefits").stock.find({"campaign_id": campaign_id}))
    # the sold-out mark and its campaign_sold_out event are written in one transaction, once (a guarded mark); the
    # relay deletes an outbox row once the broker has it, so the marks are what is counted
    campaigns = st.db("benefits").campaigns
    marked = {"_id": campaign_id, "sold_out_at": {"$ne": None}}
    wait_until("campaign_sold_out", lambda: campaigns.count_documents(marked) >= 1, 60)
    return {"issued": sum(per_member.values()), "quota": quota, "issued_equals_quota": sum(per_member.values()) == quota,
            "per_member_max": max(per_member.values()) if per_member else 0, "stock_left": left,
            "sold_out_events": campaigns.count_documents(marked)}


# ---- where the CPU went ------------------------------------------------------------------------------------------
def _cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _leaf(pid):
    """The process a ``sh -c`` wrapper started (or the process itself)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return pid
    return children[0] if len(children) == 1 else pid


def processes(st):
    """name -> pid of every process of the stack, the store, and the broker (shared by every vhost)."""
    out = {"%s-%d" % (name, i): _leaf(p.pid) for name, ps in st.stack.procs.items() for i, p in enumerate(ps)}
    if st.store_process is not None:
        out["store"] = st.store_process.pid
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if b"beam.smp" in f.read():
                        out["rabbitmq"] = int(pid)
            except OSError:
                pass
    return out


def cpu_snapshot(pids):
    return {name: _cpu_seconds(pid) for name, pid in pids.items()}


def cpu_used(before, after, requests):
    """CPU seconds each process spent during the grab, and per request in ms."""
    out = {}
    for name, t0 in before.items():
        t1 = after.get(name)
        if t0 is not None and t1 is not None:
            out[name] = {"cpu_s": round(t1 - t0, 2), "cpu_ms_per_request": round((t1 - t0) * 1000.0 / requests, 2)}
    return out


# ---- raw yardsticks, same run ---------------------------------------------------------------------------------
def raw_rpc(st, seconds, concurrency=RAW_CONCURRENCY):
    """``benefits.ping`` round trips: one at a time (latency), then ``concurrency`` in flight (calls/s)."""
    cfg = {"AMQP_URI": st.amqp_uri, "serializer": "json"}
    with ClusterRpcProxy(cfg, timeout=30) as rpc:
        for _ in range(50):
            rpc.benefits.ping()
        seq = common.sequential(lambda i: rpc.benefits.ping(), 300)
    proxies = [ClusterRpcProxy(cfg, timeout=30) for _ in range(concurrency)]
    started = [p.start() for p in proxies]
    try:
        par = common.run_concurrent(lambda state, i: bool(state.benefits.ping()), concurrency=concurrency,
                                    duration=seconds, setup=lambda: started.pop())
    finally:
        for p in proxies:
            p.stop()
    return {"sequential": seq, "concurrent": par}


def raw_store(st, seconds, concurrency=RAW_CONCURRENCY):
    coll = st.mongo["%s_benchraw" % st.prefix]["flash"]
    coll.drop()
    n = 1000
    coll.insert_many([{"_id": i, "n": 0} for i in range(n)])
    res = common.run_concurrent(lambda state, i: bool(coll.find_one_and_update(
        {"_id": abs(i) * 7919 % n}, {"$inc": {"n": 1}})), concurrency=concurrency, duration=seconds)
    coll.drop()
    return res


# ---- one stack ------------------------------------------------------------------------------------------------
def grab_round(st, cfg, target, user_tokens):
    """Every member claims ``target`` at once: the figures of that grab."""
    random.shuffle(user_tokens)
    pids = processes(st)
    before, ops_before = cpu_snapshot(pids), common.opcounters(st)
    machine_before, client_before = common.machine_cpu(), common.self_cpu()
    started, samples = grab(st, target["id"], user_tokens, cfg["concurrency"])
    machine_after, client_after = common.machine_cpu(), common.self_cpu()
    after, ops_after = cpu_snapshot(pids), common.opcounters(st)
    result = summarise(started, samples, cfg["quota"])
    result["cpu_during_grab"] = cpu_used(before, after, len(samples))
    client = client_after - client_before
    result["cpu_during_grab"]["bench-client"] = {
        "cpu_s": round(client, 2), "cpu_ms_per_request": round(client * 1000.0 / len(samples), 2)}
    # the whole machine: when it is all busy (2.0 on these 2-core machines) a second replica has no CPU to add
    result["machine_cores_busy"] = common.machine_busy(machine_before, machine_after)
    # is the store the ceiling? its own CPU (one Python process: 1.0 = a whole core) and operations per request
    result["cpu_cores_busy"] = {name: round(c["cpu_s"] / result["elapsed_s"], 3)
                                for name, c in result["cpu_during_grab"].items()}
    if ops_before and ops_after:
        result["store_ops_per_request"] = {k: round((ops_after[k] - ops_before[k]) / len(samples), 2)
                                           for k in ops_after}
    result["load_average_after"] = os.getloadavg()
    result["check"] = verify(st, target["id"], cfg["quota"])
    return result


def prepare(cfg, replicas):
    """A stack with ``replicas`` benefits replicas, its members projected, their tokens minted and a warm-up grab
    done: ``(stack, admin client, merchant, tokens)``."""
    common.say("flash_grab: starting a stack with %d benefits replica(s) ..." % replicas)
    st = common.start_stack(replicas={"benefits": replicas})
    try:
        admin = common.Http(st.url, token=common.staff_token())
        merchant = http_ok(admin, "POST", "/api/v1/merchants", {
            "name": "锦江区老码头火锅", "uscc": ids.make_uscc("91510104" + "%09d" % random.randrange(10 ** 9)),
            "region_code": "510104"})
        warm = make_campaign(admin, merchant["id"], "暖场券", cfg["members"])
        common.say("flash_grab: projecting %d members ..." % cfg["members"])
        users = project_members(st, cfg["members"])
        user_tokens = [tokens.issue(u, "member") for u in users]
        common.say("flash_grab: warming up ...")
        grab(st, warm["id"], user_tokens[:min(300, len(user_tokens))], cfg["concurrency"])
        quiet(st)
    except BaseException:
        st.stop()
        raise
    return st, admin, merchant, user_tokens


def finish(cfg, st, rounds):
    """The run's figures from its rounds, with the same stack's raw yardsticks."""
    # the round of median rate is the run's figure (a grab lasts a few seconds: one round is noisy here)
    result = sorted(rounds, key=lambda r: r["claims_per_s"])[len(rounds) // 2]
    result["rounds_claims_per_s"] = [r["claims_per_s"] for r in rounds]
    result["rounds_ok"] = all(r["check"]["issued_equals_quota"] and r["check"]["per_member_max"] <= 1
                              and r["outcomes"].get("201", 0) == r["check"]["issued"] for r in rounds)
    quiet(st)
    common.say("flash_grab: raw RPC and store, %ss each ..." % cfg["raw_seconds"])
    rpc = raw_rpc(st, cfg["raw_seconds"])
    store = raw_store(st, cfg["raw_seconds"])
    result["raw"] = {"rpc_ping_sequential": rpc["sequential"], "rpc_ping_concurrent": rpc["concurrent"],
                     "store_find_one_and_update": store}
    result["ratios"] = {
        "claims_per_s / raw_rpc_calls_per_s": ratio(result["claims_per_s"], rpc["concurrent"]["per_s"]),
        "claims_per_s / raw_store_fau_per_s": ratio(result["claims_per_s"], store["per_s"]),
    }
    result["replicas"] = st.replicas()
    return result


def run_interleaved(cfg):
    """Every replica count's stack is started and prepared first; then round k of each stack runs in turn (1, 2,
    1, 2, ...), each on a fresh campaign. Run one stack after the other, a drift in the machine's speed (another
    process, the disk, the host) lands on one replica count only: the same code measured 0.66x with two replicas
    second and 0.88x with them first, minutes apart (capacity.md run 13). Interleaved, a drift lands on both. The
    stack not grabbing is idle meanwhile (only its timers and polls run)."""
    stacks = {}
    try:
        for r in cfg["replicas"]:
            stacks[r] = prepare(cfg, r)
        rounds = {r: [] for r in stacks}
        for k in range(cfg["rounds"]):
            for r, (st, admin, merchant, user_tokens) in stacks.items():
                target = make_campaign(admin, merchant["id"], "10点抢 满30减10 #%d" % (k + 1), cfg["quota"])
                common.say("flash_grab: round %d of %d, %d replica(s): %d members grab %d coupons at %d connections"
                           " ..." % (k + 1, cfg["rounds"], r, cfg["members"], cfg["quota"], cfg["concurrency"]))
                rounds[r].append(grab_round(st, cfg, target, user_tokens))
                quiet(st)
        return {"benefits_x%d" % r: finish(cfg, stacks[r][0], rounds[r]) for r in stacks}
    finally:
        for st, *_ in stacks.values():
            st.stop()


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def main():
    if os.environ.get("MONGO_URI") and not os.environ.get("BENCH_MONGO_URI"):
        os.environ["BENCH_MONGO_URI"] = os.environ["MONGO_URI"]
    cfg = settings()
    runs = run_interleaved(cfg)
    doc = {"settings": cfg, "runs": runs, "interleaved": True}
    path = common.write_result("flash_grab", doc)
    print(table(cfg, runs))
    print("\nwritten to %s" % os.path.relpath(path, common.ROOT))
    return doc


def figures(res):
    """Rows for ``make bench``'s summary: per replica count, the rate, latency, correctness and the store's load."""
    rows = []
    runs = res.get("runs", {})
    for name, r in runs.items():
        ok = r["outcomes"].get("201", 0)
        issued, quota = r["check"]["issued"], r["check"]["quota"]
        rows += [("flash grab %s, claims/s (%d requests)" % (name, r["requests"]), r["claims_per_s"], "req/s"),
                 ("flash grab %s, p50/p95/p99" % name, "%s / %s / %s" % (r["p50_ms"], r["p95_ms"], r["p99_ms"]),
                  "ms"),
                 ("flash grab %s, oversold / lost / per-member max" % name, "%d / %d / %d" % (
                     max(0, issued - quota), max(0, ok - issued), r["check"]["per_member_max"]), "coupons"),
                 ("flash grab %s, claims/s of each round (median above); every round exact" % name, "%s; %s" % (
                     " / ".join(str(x) for x in r.get("rounds_claims_per_s", [r["claims_per_s"]])),
                     "yes" if r.get("rounds_ok", True) else "NO"), "req/s"),
                 ("flash grab %s, store cores busy / ops per request" % name, "%s / %s" % (
                     r.get("cpu_cores_busy", {}).get("store"),
                     round(sum((r.get("store_ops_per_request") or {}).values()), 2)), ""),
                 ("flash grab %s, machine cores busy (of %d) / CPU ms per request, all processes" % (
                     name, os.cpu_count() or 1), "%s / %s" % (r.get("machine_cores_busy"), round(sum(
                         c["cpu_ms_per_request"] for c in r.get("cpu_during_grab", {}).values()), 2)), "")]
    if "benefits_x1" in runs and "benefits_x2" in runs:
        rows.append(("flash grab, 2 replicas / 1 replica claims/s", round(
            runs["benefits_x2"]["claims_per_s"] / runs["benefits_x1"]["claims_per_s"], 2), "x"))
    return rows


def table(cfg, runs):
    rows = []
    for name, r in runs.items():
        cp = r.get("claim_path", {})
        raw = r["raw"]
        rows += [
            (name, "claims/s (all %d requests; median round)" % r["requests"], r["claims_per_s"]),
            (name, "claims/s of each round", " / ".join(str(x) for x in r.get("rounds_claims_per_s", []))),
            (name, "every round: quota issued exactly, max 1 per member", r.get("rounds_ok")),
            (name, "p50 / p95 / p99 ms", "%s / %s / %s" % (r["p50_ms"], r["p95_ms"], r["p99_ms"])),
            (name, "201s/s while stock lasted", cp.get("successful_claims_per_s")),
            (name, "201s p50 / p95 / p99 ms", "%s / %s / %s" % (cp.get("p50_ms"), cp.get("p95_ms"), cp.get("p99_ms"))),
            (name, "issued (quota %d)" % cfg["quota"], r["check"]["issued"]),
            (name, "per-member max", r["check"]["per_member_max"]),
            (name, "sold-out events", r["check"]["sold_out_events"]),
            (name, "raw RPC ping calls/s (32 in flight)", raw["rpc_ping_concurrent"]["per_s"]),
            (name, "raw RPC ping p50 ms (one at a time)", raw["rpc_ping_sequential"]["p50_ms"]),
            (name, "raw store find_one_and_update/s (32)", raw["store_find_one_and_update"]["per_s"]),
            (name, "claims/s ÷ raw RPC/s", r["ratios"]["claims_per_s / raw_rpc_calls_per_s"]),
            (name, "claims/s ÷ raw store fau/s", r["ratios"]["claims_per_s / raw_store_fau_per_s"]),
        ]
        rows += [(name, "outcome %s" % k, v) for k, v in sorted(r["outcomes"].items())]
        rows += [(name, "CPU ms/request: %s" % k, v["cpu_ms_per_request"])
                 for k, v in sorted(r["cpu_during_grab"].items())]
        rows.append((name, "machine cores busy during the grab", r.get("machine_cores_busy")))
        rows.append((name, "load average after the grab", "%.1f %.1f %.1f" % tuple(r["load_average_after"])))
    return common.table(rows, ["run", "figure", "value"])


if __name__ == "__main__":
    main()

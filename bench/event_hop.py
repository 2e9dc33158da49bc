"""Event hop latency.

* **kit hop**: a state change committed with its event in the outbox (one transaction) -> the relay publishes it with
  confirms -> the reliable, idempotent handler of another process writes it (with the events it is handling at
  once, idempotent by natural keys, as notify's ``coupon_claimed`` handler: see ``HopSink``). Latency = the
  handler's write time minus the outbox row's commit time, for events emitted one at a time (no queueing), and
  the end-to-end rate of a burst (written to the outbox 50 events to a
  transaction, as a group commit of claims writes them, so the burst measures the relay and the handler rather than
  one-event transactions). Two ``nameko run`` processes (``benchhop`` emits ``membership.member_joined`` into its
  outbox; ``benchsink`` handles it), on the same broker and store.
* **join -> welcome inbox** (needs membership and notify): ``POST /api/v1/members`` answered -> the welcome message
  visible in ``GET /api/v1/members/me/notifications`` (membership's outbox, the broker, notify's handler).

    python -m bench.event_hop

Sizes: ``BENCH_HOP_EVENTS`` (single events, default 200), ``BENCH_HOP_BURST`` (default 1000),
``BENCH_JOINS`` (join -> welcome samples, default 20). ``BENCH_HOP_KIT_ONLY=1`` (run alone): only the kit hop, on a
broker vhost and a store without the UnionHub services (quick to start; no join -> welcome). The burst's JSON has
CPU ms per event of the emitting process (its transactions and its relay: ``relay``), the handler's, the store's and
the broker's, and store operations per event.
"""
from bench import common  # noqa: I001  (monkey-patches first)

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from nameko.rpc import rpc  # noqa: E402

from support.stack import wait_for  # noqa: E402
from unionhub_kit import clock, topology  # noqa: E402
from unionhub_kit.batching import Batcher  # noqa: E402
from unionhub_kit.consumer import on_event, run_once_many  # noqa: E402
from unionhub_kit.mongo import Mongo, insert_new_many, transaction  # noqa: E402
from unionhub_kit.outbox import Outbox  # noqa: E402

SINK = topology.Subscription("benchsink", "on_member_joined", [("membership", "member_joined")])
if SINK not in topology.SUBSCRIPTIONS:  # both processes import this module: the relay declares the sink's queue
    topology.SUBSCRIPTIONS.append(SINK)

BURST_PER_COMMIT = 50  # the burst is written as group commits write events (claims: insert_many per batch)
MEMBER = {"user_id": "usr_bench", "union_id": "uni_bench", "union_code": "5101040001", "region_code": "510104",
          "occupation_group": "courier", "status": "active", "card_no": "C1", "joined_at": "2026-01-01T00:00:00Z",
          "phone_masked": "138****5678"}


class HopSource:
    """Emits ``member_joined`` through the kit's outbox (its relay publishes to ``membership.events``)."""
    name = "membership"  # only in the benchmark's own vhost and database prefix
    db = Mongo()
    outbox = Outbox()

    @rpc
    def emit(self, n, tag, per_commit=1):
        """``n`` state changes with their events, ``per_commit`` to a transaction (a group commit's shape)."""
        for start in range(0, n, per_commit):
            mids = ["%s-%06d" % (tag, i) for i in range(start, min(n, start + per_commit))]

            def txn(session, mids=mids):
                now = clock.now()
                self.db.hop_state.insert_many([{"_id": mid, "at": now} for mid in mids], session=session)
                self.outbox.add_many(session, [("member_joined", dict(MEMBER, member_id=mid), mid,
                                                self.outbox.request_id) for mid in mids])
            transaction(self.db, txn)
        return n


class HopSink:
    """A reliable, idempotent handler in the shape of notify's ``coupon_claimed`` handler (the busiest of a grab):
    the events this process is handling at once are written together (a group commit), in one unordered
    ``insert_many`` idempotent by the documents' natural keys (``insert_new_many``: a redelivered event inserts
    nothing again), with no processed-event record and no transaction. ``BENCH_HOP_SINK=records`` instead records
    each event in ``processed_events`` in one transaction with its write (``run_once_many``, the kit's handler for
    writes that have no natural key): the shape notify's handler had before 2026-12-01."""
    name = "benchsink"
    db = Mongo()
    batches = Batcher(window_ms=2)

    @on_event("membership", "member_joined")
    def on_member_joined(self, event):
        self.batches.submit("member_joined", event, self._handle)

    def _handle(self, _key, envs):
        if os.environ.get("BENCH_HOP_SINK") == "records":
            run_once_many(self.db, envs, lambda session, fresh: self.db.hops.insert_many(
                [{"_id": e["data"]["member_id"], "at": clock.now()} for e in fresh], session=session),
                handler="on_member_joined")
        else:
            skipped = insert_new_many(self.db.hops, [{"_id": e["data"]["member_id"], "at": clock.now()} for e in envs])
            if skipped:  # redelivered (or twice in the batch): counted, not written again
                self.db.hop_stats.update_one({"_id": "redelivered"}, {"$inc": {"n": len(skipped)}}, upsert=True)
        return [None] * len(envs)


def _start(st, cls, prefix):
    env = dict(st.stack.env, UNIONHUB_DB_PREFIX=prefix)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    log = open(os.path.join(st.log_dir, "bench-hop-%s.log" % cls), "ab")
    return subprocess.Popen(["nameko", "run", "--config", "deploy/nameko.yaml", "bench.event_hop:%s" % cls],
                            cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kit_hop(st, singles, burst):
    from nameko.standalone.rpc import ClusterRpcProxy
    prefix = st.prefix + "hop"
    # a vhost of its own: the stand-in "membership" must not meet the real one
    vhost = "uh_bench_hop_%s" % os.urandom(4).hex()
    common.create_vhost(vhost)
    amqp = "amqp://guest:guest@localhost:5672/%s" % vhost
    import types
    st2 = types.SimpleNamespace(stack=types.SimpleNamespace(env=dict(st.stack.env, AMQP_URI=amqp)),
                                log_dir=st.log_dir)
    procs = [_start(st2, "HopSink", prefix), _start(st2, "HopSource", prefix)]
    src_db = st.mongo["%s_membership" % prefix]
    sink_db = st.mongo["%s_benchsink" % prefix]
    try:
        with ClusterRpcProxy({"AMQP_URI": amqp, "serializer": "json"}, timeout=300) as cluster:
            deadline = time.time() + 60
            while True:
                try:
                    cluster.membership.emit(1, "warm")
                    break
                except Exception:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
            wait_for(lambda: sink_db.hops.count_documents({}) >= 1, 60)
            lat = []
            for i in range(singles):
                tag = "single%06d" % i
                cluster.membership.emit(1, tag)
                mid = "%s-%06d" % (tag, 0)
                wait_for(lambda: sink_db.hops.find_one({"_id": mid}), 30, 0.002)
            relay, deliver = [], []
            for d in sink_db.hops.find({"_id": {"$regex": "^single"}}):
                src = src_db.hop_state.find_one({"_id": d["_id"]})
                row = src_db.outbox.find_one({"envelope.subject": d["_id"]})
                lat.append((d["at"] - src["at"]).total_seconds())
                if row and row.get("published_at"):  # only with OUTBOX_KEEP_PUBLISHED (else the row is gone)
                    relay.append((row["published_at"] - row["created_at"]).total_seconds())
                    deliver.append((d["at"] - row["published_at"]).total_seconds())
            meter = common.CpuMeter(st, {"relay": [procs[1]], "handler": [procs[0]]})
            cpu0, ops0 = meter.snapshot(), common.opcounters(st)
            t0, started = time.perf_counter(), clock.now()
            cluster.membership.emit(burst, "burst", BURST_PER_COMMIT)
            emitted = time.perf_counter() - t0
            # the end is the last handled event's own time (the handler writes it in its transaction), so the count
            # is polled only twice a second: polled every 50 ms it was ~10% of the store's work during the burst
            wait_for(lambda: sink_db.hops.count_documents({"_id": {"$regex": "^burst"}}) >= burst, 300, 0.5)
            last = next(sink_db.hops.find({"_id": {"$regex": "^burst"}}).sort("at", -1).limit(1))
            elapsed = (last["at"] - started).total_seconds()
            cpu1, ops1 = meter.snapshot(), common.opcounters(st)
            measured = time.perf_counter() - t0  # what the CPU figures cover
            if os.environ.get("BENCH_HOP_SINK") == "records":
                dup = sink_db.processed_events.count_documents({}) - sink_db.hops.count_documents({})
            else:  # events delivered again and skipped by their natural key
                dup = (sink_db.hop_stats.find_one({"_id": "redelivered"}) or {}).get("n", 0)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        common.delete_vhost(vhost)
    single = common.percentiles(lat)
    burst_res = {"events": burst, "elapsed_s": round(elapsed, 2), "emit_s": round(emitted, 2),
                 "events_per_s": round(burst / elapsed, 1), "duplicates": dup,
                 "sink": "records" if os.environ.get("BENCH_HOP_SINK") == "records" else "natural_keys",
                 # "relay": the emitting process (its transactions and its outbox relay); "handler": the consumer
                 "cpu_ms_per_event": common.CpuMeter.per_request(cpu0, cpu1, burst),
                 "cpu_cores_busy": {k: round((cpu1[k] - cpu0.get(k, 0.0)) / measured, 3) for k in cpu1},
                 "store_ops_per_event": {k: round((ops1[k] - ops0[k]) / burst, 2) for k in ops1}
                 if ops0 and ops1 else None}
    return {"hop_single": single, "hop_commit_to_published": common.percentiles(relay),
            "hop_published_to_handled": common.percentiles(deliver), "hop_burst": burst_res}


def join_to_welcome(st, samples):
    """Seconds from a join's 201 to the welcome message in the member's inbox."""
    from support import client
    client.auto_union(st)
    lat = []
    for _ in range(samples):
        token = client.member_token(st)
        h = common.Http(st.url, token=token)
        status, _ = h.request("POST", "/api/v1/members", body={
            "name": "王五", "id_number": client.new_id_number(), "union_id": client.auto_union(st)["id"],
            "employer": "成都某某物流有限公司", "occupation_group": "delivery_rider", "consent": True})
        assert status == 201, status
        t0 = time.perf_counter()
        while True:
            status, body = h.request("GET", "/api/v1/members/me/notifications")
            if status == 200 and body["items"]:
                break
            if time.perf_counter() - t0 > 30:
                raise TimeoutError("no welcome message within 30 s")
            time.sleep(0.002)
        lat.append(time.perf_counter() - t0)
        h.close()
    return common.percentiles(lat)


def run(st=None):
    own = st is None
    kit_only = own and os.environ.get("BENCH_HOP_KIT_ONLY") == "1"
    if own:
        st = common.start_stack(services=[]) if kit_only else common.start_stack()
    res = {}
    try:
        common.say("event_hop: outbox -> broker -> reliable handler ...")
        res.update(kit_hop(st, common.env_int("BENCH_HOP_EVENTS", 200), common.env_int("BENCH_HOP_BURST", 1000)))
        try:
            if kit_only:
                raise RuntimeError("BENCH_HOP_KIT_ONLY=1")
            common.say("event_hop: join -> welcome inbox ...")
            res["join_to_welcome"] = join_to_welcome(st, common.env_int("BENCH_JOINS", 20))
        except Exception as exc:
            common.say("event_hop: join -> welcome skipped: %r" % exc)
            res["join_to_welcome_error"] = repr(exc)[:300]
    finally:
        if own:
            st.stop()
    common.write_result("event_hop", res)
    return res


def figures(res):
    rows = [("event hop outbox->handler, p50/p99", "%s / %s" % (res["hop_single"]["p50_ms"],
                                                                 res["hop_single"]["p99_ms"]), "ms"),
            ("event burst outbox->handler", res["hop_burst"]["events_per_s"], "events/s")]
    if "join_to_welcome" in res:
        j = res["join_to_welcome"]
        rows.append(("join -> welcome in inbox, p50/p99", "%s / %s" % (j["p50_ms"], j["p99_ms"]), "ms"))
    return rows


if __name__ == "__main__":
    r = run()
    print(common.table(figures(r), ["figure", "value", "unit"]))

"""Raw figures of the framework and the store on this machine, the yardstick every other figure is divided by.

* nameko RPC between two services (``benchdriver`` calls ``benchecho.echo`` through the kit's timed RPC proxy):
  one call at a time (latency) and 32 calls in flight (calls/s); both are ``nameko run`` processes like the real
  services, on the same broker.
* the store (pymongo on the same SecantusDB the services use): ``find_one`` by ``_id`` one at a time (latency) and
  ``find_one_and_update`` with ``$inc`` from 32 green threads (updates/s).

    python -m bench.raw              # its own stack (broker vhost + store; no UnionHub services needed)

Sizes: ``BENCH_RAW_CALLS`` (sequential calls, default 1000), ``BENCH_DURATION`` (seconds per throughput phase,
default 10), ``BENCH_CONCURRENCY`` (default 32).
"""
from bench import common  # noqa: I001  (monkey-patches first)

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import eventlet  # noqa: E402
from nameko.rpc import rpc  # noqa: E402

from unionhub_kit.rpc import Rpc  # noqa: E402


class EchoService:
    """The trivial service: answers at once."""
    name = "benchecho"

    @rpc
    def echo(self, value):
        return value


class DriverService:
    """Calls ``benchecho`` from inside a service, as one UnionHub service calls another."""
    name = "benchdriver"
    echo = Rpc("benchecho", timeout=30)

    @rpc
    def drive(self, total, concurrency, seconds=None):
        lat, errors = [], []
        stop_at = time.perf_counter() + seconds if seconds else None
        count = [0]

        def one():
            while True:
                if stop_at is not None:
                    if time.perf_counter() >= stop_at:
                        return
                elif count[0] >= total:
                    return
                count[0] += 1
                t0 = time.perf_counter()
                try:
                    self.echo.echo({"n": count[0]})
                except Exception as exc:  # counted, and the run goes on
                    errors.append(repr(exc)[:200])
                    continue
                lat.append(time.perf_counter() - t0)
        started = time.perf_counter()
        pool = eventlet.GreenPool(concurrency)
        for _ in range(concurrency):
            pool.spawn(one)
        pool.waitall()
        return {"elapsed": time.perf_counter() - started, "latencies": lat, "errors": len(errors),
                "sample_errors": errors[:3]}


def start_rpc_processes(st):
    procs = []
    env = dict(st.stack.env)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    log = open(os.path.join(st.log_dir, "bench-raw.log"), "ab")
    for cls in ("EchoService", "DriverService"):
        procs.append(subprocess.Popen(["nameko", "run", "--config", "deploy/nameko.yaml", "bench.raw:%s" % cls],
                                      cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    return procs


def stop_processes(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def rpc_figures(st, calls, seconds, concurrency):
    from nameko.standalone.rpc import ClusterRpcProxy
    procs = start_rpc_processes(st)
    try:
        with ClusterRpcProxy({"AMQP_URI": st.amqp_uri, "serializer": "json"}, timeout=seconds + 120) as cluster:
            deadline = time.time() + 60
            while True:
                try:
                    cluster.benchdriver.drive(5, 1)
                    break
                except Exception:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
            cluster.benchdriver.drive(200, 8)  # warm up connections and pools
            seq = cluster.benchdriver.drive(calls, 1)
            box = {}

            def load():
                box["par"] = cluster.benchdriver.drive(0, concurrency, seconds)
                return {"ok": len(box["par"]["latencies"])}
            cpu = common.measured_load(st, load, groups={"echo": procs[:1], "driver": procs[1:]})
            par = box["par"]
    finally:
        stop_processes(procs)
    one = common.percentiles(seq["latencies"])
    many = common.percentiles(par["latencies"])
    many.update({"calls_per_s": round(len(par["latencies"]) / par["elapsed"], 1), "concurrency": concurrency,
                 "elapsed_s": round(par["elapsed"], 2), "cpu_ms_per_call": cpu["cpu_ms_per_request"]})
    one["calls_per_s"] = round(len(seq["latencies"]) / seq["elapsed"], 1)
    one["errors"], many["errors"] = seq["errors"], par["errors"]
    return {"rpc_sequential": one, "rpc_concurrent": many}


def store_figures(st, calls, seconds, concurrency):
    db = st.mongo["%s_benchraw" % st.prefix]
    coll, counters = db["docs"], db["counters"]
    coll.drop()
    counters.drop()
    n_docs, n_counters = 10000, 100
    coll.insert_many([{"_id": "d%05d" % i, "n": 0, "payload": "x" * 200} for i in range(n_docs)])
    # find_one_and_update on a small collection, as the services use it (campaign counters, sequences):
    # SecantusDB's findAndModify cost grows with the collection's size, find_one / update_one by _id do not
    counters.insert_many([{"_id": "c%03d" % i, "n": 0} for i in range(n_counters)])
    for i in range(200):  # warm up
        coll.find_one({"_id": "d%05d" % i})
    seq = common.sequential(lambda i: coll.find_one({"_id": "d%05d" % (i * 7919 % n_docs)}), calls)

    def fam(state, i):
        counters.find_one_and_update({"_id": "c%03d" % (abs(i) * 37 % n_counters)}, {"$inc": {"n": 1}})
        return True

    def upd(state, i):
        coll.update_one({"_id": "d%05d" % (abs(i) * 7919 % n_docs)}, {"$inc": {"n": 1}})
        return True
    fam_res = common.measured_load(st, lambda: common.run_concurrent(fam, concurrency=concurrency,
                                                                     duration=seconds), groups={})
    upd_res = common.measured_load(st, lambda: common.run_concurrent(upd, concurrency=concurrency,
                                                                     duration=seconds), groups={})
    total = sum(d["n"] for d in counters.find({}, {"n": 1}))
    assert total >= fam_res["ok"], "lost updates: %s < %s" % (total, fam_res["ok"])
    big = common.sequential(lambda i: coll.find_one_and_update({"_id": "d%05d" % (i * 7919 % n_docs)},
                                                               {"$inc": {"n": 1}}), max(10, calls // 50))
    coll.drop()
    counters.drop()
    return {"store_find_one": seq, "store_find_one_and_update": fam_res, "store_update_one": upd_res,
            "store_find_one_and_update_10k_docs_sequential": big}


def run(st=None):
    calls = common.env_int("BENCH_RAW_CALLS", 1000)
    seconds = common.duration()
    conc = common.concurrency()
    own = st is None
    if own:
        st = common.start_stack(services=[])
    try:
        res = {}
        common.say("raw: nameko RPC (%d sequential, %ss at %d in flight) ..." % (calls, seconds, conc))
        res.update(rpc_figures(st, calls, seconds, conc))
        common.say("raw: store (%d sequential find_one, %ss of find_one_and_update at %d) ..." % (calls, seconds, conc))
        res.update(store_figures(st, calls, seconds, conc))
    finally:
        if own:
            st.stop()
    common.write_result("raw", res)
    return res


def figures(res):
    """``(name, value, unit)`` rows for the summary table."""
    return [
        ("raw RPC one at a time, p50", res["rpc_sequential"]["p50_ms"], "ms"),
        ("raw RPC 32 in flight", res["rpc_concurrent"]["calls_per_s"], "calls/s"),
        ("raw RPC 32 in flight, p99", res["rpc_concurrent"]["p99_ms"], "ms"),
        ("raw store find_one by _id, p50", res["store_find_one"]["p50_ms"], "ms"),
        ("raw store find_one_and_update, 32 conc.", res["store_find_one_and_update"]["per_s"], "ops/s"),
        ("raw store update_one by _id, 32 conc.", res["store_update_one"]["per_s"], "ops/s"),
    ]


if __name__ == "__main__":
    r = run()
    print(common.table([(n, v, u) for n, v, u in figures(r)], ["figure", "value", "unit"]))

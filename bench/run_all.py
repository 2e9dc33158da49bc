"""``make bench``: every benchmark in one go on the embedded stack, then ONE table.

Order: the raw nameko RPC and raw store figures first (the yardstick of this run on this machine), then the gateway
read path, the claim path, the event hop and join -> welcome latency on one shared stack; then the benchmarks that
bring their own stack (flash grab, search at seed scale, announcement fan-out) when their modules exist.
Each figure is printed with its ratio to the raw figure of the same kind from the same run: a rate against raw RPC
calls/s with 32 in flight, a latency against one raw RPC round trip. Where DESIGN.md gives the nameko-examples
figure for the same kind of request on this kind of machine, that ratio is printed too.

Everything lands in ``bench/results/*.json`` (``summary.json`` holds the table). Sizes (defaults keep the whole run
to a few minutes): ``BENCH_DURATION`` (s per load phase, 10), ``BENCH_CONCURRENCY`` (32), ``BENCH_CLAIM_MEMBERS``
(64), ``BENCH_SKIP`` (comma-separated: raw, gateway_read, claim, event_hop, flash_grab, search, fanout, stations, scale;
scale runs only when ``BENCH_SCALE_URI`` names a seed-scale store: ``bench/scale.py``),
``BENCH_SEARCH_POSTINGS`` (10000 here), ``BENCH_FANOUT_MEMBERS`` (10000 here), ``BENCH_STATIONS_VISITS`` (50000 here;
the 7,473 stations always). ``BENCH_JOURNALED=1`` makes every write of the stack wait for the journal
(``w=majority&journal=true`` on the store URI).
"""
from bench import common  # noqa: I001  (monkey-patches first)

import importlib  # noqa: E402
import inspect  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

from bench import event_hop, gateway_read, raw  # noqa: E402

REFERENCE = {  # nameko-examples on this kind of machine (DESIGN.md), 32 connections
    "read": (630.0, "GET /products/<id>"),
    "write": (168.0, "POST /orders"),
}
SKIP = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))


def claim_path(st):
    """32 members' connections claiming from one live campaign with a large quota (per-member limit 100)."""
    from support import client
    conc = common.concurrency()
    seconds = common.duration()
    n_members = max(conc, common.env_int("BENCH_CLAIM_MEMBERS", 64))
    admin = client.admin_token(st)
    campaign = common.create_campaign(st, admin, quota=1000000, per_member_limit=100, title="抢券压测 claim path")
    common.say("claim: making %d members ..." % n_members)
    members = common.new_members(st, n_members)
    tokens = [m[0] for m in members]
    path = "/api/v1/campaigns/%s/claims" % campaign["id"]
    # the members reach benefits' projection by event: wait until the last one can claim
    deadline = time.time() + 60
    probe = common.Http(st.url, token=tokens[-1])
    while True:
        status, body = probe.request("POST", path)
        if status == 201:
            break
        if time.time() > deadline:
            raise RuntimeError("members cannot claim: %s %s" % (status, body))
        time.sleep(0.2)
    probe.close()
    common.say("claim: POST %s for %ss at %d connections ..." % (path, seconds, conc))

    def claim(h, i):  # the members take turns, so none reaches the per-member limit within the run
        h.token = tokens[i % len(tokens)]
        return h.post(path)
    res = common.measured_load(st, lambda: common.http_load(claim, st.url, concurrency=conc, duration=seconds))
    status, body = common.Http(st.url).request("GET", "/api/v1/campaigns/%s" % campaign["id"])
    issued = campaign["quota"] - body["remaining"] if status == 200 else None
    res["coupons_issued"] = issued
    res["claims_answered_201"] = res["status"].get("201", 0) + 1  # + the probe
    common.write_result("claim", res)
    return res


def run_own_stack_benchmark(name):
    """Benchmarks that start their own stack: ``bench.<name>.main()`` (or ``run()``), then its JSON result."""
    try:
        mod = importlib.import_module("bench.%s" % name)
    except ImportError as exc:
        common.say("%s: not available (%s)" % (name, exc))
        return None
    fn = getattr(mod, "main", None) or getattr(mod, "run", None)
    if fn is None:
        return None
    before = (common.read_result(name) or {}).get("at")
    try:
        if inspect.signature(fn).parameters:
            fn(None)
        else:
            fn()
    except SystemExit:
        pass
    result = common.read_result(name)
    if result is None or result.get("at") == before:
        raise RuntimeError("%s wrote no result" % name)
    return mod, result


def generic_rows(name, doc, prefix=""):
    """Figures of a result we do not know the shape of: every load phase's rate and p99, every ``*_per_s``."""
    rows = []
    for key, value in doc.items():
        label = ("%s %s%s" % (name, prefix, key)).strip()
        if isinstance(value, dict):
            rate = value.get("ok_per_s", value.get("per_s", value.get("calls_per_s")))
            if rate is not None and value.get("p99_ms") is not None:
                rows.append(("%s" % label, rate, "req/s", "rate"))
                rows.append(("%s, p50/p99" % label, "%s / %s" % (value.get("p50_ms"), value["p99_ms"]), "ms",
                             "latency"))
            elif value.get("p50_ms") is not None:
                for k, v in value.items():
                    if k.endswith("_per_s") and isinstance(v, (int, float)):
                        rows.append(("%s %s" % (label, k[:-len("_per_s")]), v, "/s", "rate"))
                rows.append(("%s, p50/p99" % label, "%s / %s" % (value["p50_ms"], value.get("p99_ms")), "ms",
                             "latency"))
            elif len(prefix) < 40:
                rows.extend(generic_rows(name, value, prefix + key + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and (
                key.endswith("_per_s") or key.endswith("_ms")):
            rows.append((label, value, "/s" if key.endswith("_per_s") else "ms",
                         "rate" if key.endswith("_per_s") else "latency"))
    return rows


def ratio(value, base):
    try:
        v = float(str(value).split(" / ")[0])
        return "%.2fx" % (v / base) if base else None
    except (TypeError, ValueError):
        return None


def main():
    started = time.time()
    rows = []  # (figure, value, unit, kind: rate | latency | None, reference kind)
    results = {}
    errors = {}
    st = common.start_stack()
    common.say("stack up: %s (logs in %s)" % (", ".join("%s x%d" % kv for kv in st.replicas().items()), st.log_dir))
    try:
        if "raw" not in SKIP:
            results["raw"] = r = raw.run(st)
            rows += [(n, v, u, None, None) for n, v, u in raw.figures(r)]
        stages = [("gateway_read", lambda: gateway_read.run(st), gateway_read.figures, "read"),
                  ("claim", lambda: claim_path(st), lambda c: [
                      ("POST /campaigns/{id}/claims, 32 conn.", c["ok_per_s"], "req/s"),
                      ("POST /campaigns/{id}/claims, p50/p95/p99", "%s / %s / %s" % (
                          c["p50_ms"], c["p95_ms"], c["p99_ms"]), "ms")], "write"),
                  ("event_hop", lambda: event_hop.run(st), event_hop.figures, None)]
        for name, fn, figs, ref in stages:
            if name in SKIP:
                continue
            try:
                results[name] = res = fn()
                for n, v, u in figs(res):
                    rows.append((n, v, u, "rate" if u in ("req/s", "events/s") else "latency", ref))
            except Exception as exc:
                errors[name] = repr(exc)[:300]
                common.say("%s failed: %r" % (name, exc))
                traceback.print_exc()
    finally:
        st.stop()
    defaults = {"BENCH_SEARCH_POSTINGS": "10000", "BENCH_FANOUT_MEMBERS": "10000", "BENCH_STATIONS_VISITS": "50000"}
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
    for name in ("flash_grab", "search", "fanout", "stations", "scale"):
        if name in SKIP:
            continue
        if name == "scale" and not os.environ.get("BENCH_SCALE_URI"):
            common.say("scale: skipped (BENCH_SCALE_URI names no seed-scale store; make seed-scale, see README)")
            continue
        common.say("%s ..." % name)
        try:
            got = run_own_stack_benchmark(name)
        except Exception as exc:
            errors[name] = repr(exc)[:300]
            common.say("%s failed: %r" % (name, exc))
            continue
        if got is None:
            continue
        mod, res = got
        results[name] = res
        body = {k: v for k, v in res.items() if k not in ("benchmark", "at", "machine")}
        if hasattr(mod, "figures"):
            try:
                for n, v, u in mod.figures(body):
                    rows.append((n, v, u, "rate" if u.endswith("/s") else "latency" if u == "ms" else None, None))
                continue
            except Exception:
                pass
        for n, v, u, kind in generic_rows(name, body):
            rows.append((n, v, u, kind, None))

    raw_res = results.get("raw")
    base_rate = raw_res["rpc_concurrent"]["calls_per_s"] if raw_res else None
    base_lat = raw_res["rpc_sequential"]["p50_ms"] if raw_res else None
    table = []
    for n, v, u, kind, ref in rows:
        r = ratio(v, base_rate) if kind == "rate" else ratio(v, base_lat) if kind == "latency" else None
        refcol = None
        if ref and kind == "rate":
            refcol = "%s (%s %s/s)" % (ratio(v, REFERENCE[ref][0]), REFERENCE[ref][1], int(REFERENCE[ref][0]))
        table.append((n, v, u, r, refcol))
    text = common.table(table, ["figure", "value", "unit", "vs raw (rate: RPC 32 in flight; latency: 1 RPC)",
                                "vs nameko-examples"])
    summary = {"rows": [dict(zip(("figure", "value", "unit", "vs_raw", "vs_reference"), t)) for t in table],
               "errors": errors, "elapsed_s": round(time.time() - started, 1),
               "load_average": os.getloadavg()}
    common.write_result("summary", summary)
    print()
    print(text)
    if errors:
        print("\nnot measured: " + "; ".join("%s (%s)" % kv for kv in errors.items()))
    print("\n%d figures in %.0fs; results in bench/results/*.json" % (len(table), time.time() - started))
    return 0 if table else 1


if __name__ == "__main__":
    sys.exit(main())

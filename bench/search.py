"""Posting search at seed scale, through the gateway: p50/p95/p99 and queries/s for keyword-only, keyword + region
prefix, region + category, salary filter and deep-page queries (``BENCH_CONCURRENCY`` connections, plus the p50 of
the same queries one at a time), beside the same run's raw store point lookup and the store-level search (no
gateway, no RPC).

    python -m bench.search                      # its own stack; seeds 690,000 postings into it first (~15 min)
    BENCH_SEARCH_POSTINGS=50000 python -m bench.search          # a smaller, quicker run
    BENCH_MONGO_URI=... BENCH_SEARCH_PREFIX=unionhub python -m bench.search
                                                # a store seeded before (make seed-scale): no seeding

Sizes: ``BENCH_SEARCH_POSTINGS`` (default 690000; employers and resumes scale with it), ``BENCH_DURATION`` (seconds
per phase, default 10), ``BENCH_CONCURRENCY`` (default 16), ``BENCH_DEEP_PAGES`` (pages followed per walk, default
25). Writes ``bench/results/search.json``.
"""
from bench import common  # noqa: I001  (monkey-patches first)

import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402

from services.jobs import search, seed_scale, store  # noqa: E402
from unionhub_kit import clock, regions  # noqa: E402

KEYWORDS = ["焊工", "电焊", "电焊工", "外卖", "外卖骑手", "快递员", "保安", "护工", "货车司机", "育婴师", "叉车",
            "司机", "普工", "厨师", "welding", "cnc", "forklift", "excel", "java", "plc"]
CATEGORIES = list("123456")


def seed_if_needed(db, postings):
    """Seed ``db`` unless it holds at least ``postings`` seeded postings already; return the count."""
    have = db.jobs.estimated_document_count()
    if have >= postings and db.employers.find_one({"_id": "seed-emp-00000"}, {"_id": 1}):
        common.say("using %d postings already in %s" % (have, db.name))
        return have
    common.say("seeding %s with %d postings ..." % (db.name, postings))
    started = time.time()
    seed_scale.seed(db, max(1, postings * 6300 // 690000), postings, postings * 190000 // 690000, drop=True)
    common.say("seeded in %.0fs" % (time.time() - started))
    return postings


def query_mix(rng):
    prefectures = [regions.normalize_prefix(p["code"]) for p in regions.prefectures()]
    counties = [c["code"] for c in regions.counties()]
    chengdu = [c for c in counties if c.startswith("5101")]

    def region():
        return rng.choice(prefectures + ["5101"] * 6 + chengdu)
    return {
        "keyword": lambda: {"q": rng.choice(KEYWORDS)},
        "keyword_region": lambda: {"q": rng.choice(KEYWORDS), "region_code": region()},
        "region_category": lambda: {"region_code": region(), "category": rng.choice(CATEGORIES)},
        "salary": lambda: {"salary_min": rng.choice((4000, 6000, 8000, 10000, 15000, 20000))},
    }


def path_of(params):
    return "/api/v1/jobs?" + urllib.parse.urlencode(params)


def run_phase(st, make_params, concurrency, duration, sizes):
    def one(http, i):
        status, body = http.request("GET", path_of(make_params()))
        if status == 200:
            sizes.append(len(body["items"]))
        return status
    return common.http_load(one, st.url, concurrency=concurrency, duration=duration, warmup=1.0)


def run_deep(st, rng, concurrency, duration, pages):
    """Each connection walks ``pages`` pages of one query by its cursors, then starts another walk."""
    mix = query_mix(rng)
    deep_lat = []
    walks = {}

    def one(http, i):
        walk = walks.get(id(http))
        if walk is None or walk["page"] >= pages or (walk["page"] and not walk["cursor"]):
            walk = walks[id(http)] = {"params": rng.choice([mix["keyword"], mix["region_category"]])(),
                                      "page": 0, "cursor": None}
        params = dict(walk["params"], limit=20)
        if walk["cursor"]:
            params["cursor"] = walk["cursor"]
        t0 = time.perf_counter()
        status, body = http.request("GET", path_of(params))
        if walk["page"] >= 19:
            deep_lat.append(time.perf_counter() - t0)
        walk["page"] += 1
        walk["cursor"] = body.get("next_cursor") if status == 200 else None
        return status
    res = common.http_load(one, st.url, concurrency=concurrency, duration=duration, warmup=1.0)
    res["pages_20_plus"] = common.percentiles(deep_lat)
    return res


def raw_store(db, n=500):
    """The store alone: ``find_one`` by ``_id`` of random postings, and the store-level search of the service."""
    ids = [d["_id"] for d in db.jobs.find({}, {"_id": 1}).limit(2000)]
    rng = random.Random(3)
    point = common.sequential(lambda i: db.jobs.find_one({"_id": rng.choice(ids)}), n)
    mix = query_mix(rng)
    now = clock.now()

    def store_search(i):
        p = mix["keyword_region"]()
        store.search_jobs(db, {"tokens": search.query_tokens(p["q"]), "region_code": p["region_code"]}, 20, None,
                          now)
    return point, common.sequential(store_search, max(50, n // 5))


def main():
    postings = common.env_int("BENCH_SEARCH_POSTINGS", 690000)
    concurrency = common.concurrency(16)
    duration = common.duration(10.0)
    pages = common.env_int("BENCH_DEEP_PAGES", 25)
    prefix = os.environ.get("BENCH_SEARCH_PREFIX")
    extra = {"UNIONHUB_DB_PREFIX": prefix} if prefix else None
    rng = random.Random(44)
    with common.stack(extra_env=extra) as st:
        db = st.db("jobs")
        postings = seed_if_needed(db, postings)
        open_now = (db.search_stats.find_one({"_id": "*"}) or {}).get("n")
        point, store_level = raw_store(db)
        results = {"postings": postings, "open_postings": open_now, "concurrency": concurrency,
                   "duration_s": duration, "load_average_before": os.getloadavg(), "phases": {}}
        single = common.Http(st.url)
        for name, make in query_mix(rng).items():
            sizes = []
            common.say("phase %s ..." % name)
            res = run_phase(st, make, concurrency, duration, sizes)
            res["mean_items"] = round(sum(sizes) / len(sizes), 1) if sizes else 0
            res["empty_pages"] = sum(1 for s in sizes if s == 0)
            res["one_at_a_time"] = common.sequential(lambda i: single.request("GET", path_of(make())), 50)
            results["phases"][name] = res
        single.close()
        common.say("phase deep_pages ...")
        results["phases"]["deep_pages"] = run_deep(st, rng, concurrency, duration, pages)
        results["raw_store_point_lookup"] = point
        results["store_level_search"] = store_level
        base = point["p50_ms"] or 1
        results["load_average_after"] = os.getloadavg()
        results["ratios_p50_vs_point_lookup"] = {n: round(r["p50_ms"] / base, 1) for n, r in
                                                 results["phases"].items() if r.get("p50_ms")}
    path = common.write_result("search", results)
    rows = [(n, r["per_s"], r["p50_ms"], r["p95_ms"], r["p99_ms"], (r.get("one_at_a_time") or {}).get("p50_ms"),
             r["status"]) for n, r in results["phases"].items()]
    deep = results["phases"]["deep_pages"]["pages_20_plus"]
    rows.append(("deep pages 20+", None, deep["p50_ms"], deep["p95_ms"], deep["p99_ms"], None, ""))
    rows.append(("store search (no gateway)", store_level["per_s"], store_level["p50_ms"], store_level["p95_ms"],
                 store_level["p99_ms"], store_level["p50_ms"], ""))
    rows.append(("raw store find_one", point["per_s"], point["p50_ms"], point["p95_ms"], point["p99_ms"],
                 point["p50_ms"], ""))
    print("search over %s postings (%s open), %d connections, %.0fs per phase, load average %.1f -> %.1f" % (
        postings, open_now, concurrency, duration, results["load_average_before"][0],
        results["load_average_after"][0]))
    print(common.table(rows, ["phase", "q/s", "p50 ms", "p95 ms", "p99 ms", "p50 ms 1-at-a-time", "status"]))
    print("written to %s" % path)


if __name__ == "__main__":
    main()

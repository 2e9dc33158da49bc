"""Stations at seed scale (7,473 stations, 2.82 M visits), through the gateway: nearest-station queries from random
points in Chengdu (dense) and in Garze (sparse), with and without amenity filters and ``open_now``: p50/p95/p99 and
queries/s (``BENCH_CONCURRENCY`` connections), beside the same run's raw store point lookup (``find_one`` by ``_id``)
and the store-level nearest search (no gateway, no RPC); then check-ins/s, each with its ``station_visited`` event,
and how long the counters took to count them all.

    python -m bench.stations                       # its own stack; seeds 7,473 stations and 2.82 M visits first
    BENCH_STATIONS_VISITS=200000 python -m bench.stations                # a smaller, quicker seed
    BENCH_MONGO_URI=... BENCH_STATIONS_PREFIX=unionhub python -m bench.stations
                                                   # a store seeded before (make seed-scale): no seeding

Sizes: ``BENCH_STATIONS_VISITS`` (default 2820000), ``BENCH_DURATION`` (seconds per phase, default 10),
``BENCH_CONCURRENCY`` (default 16). Writes ``bench/results/stations.json``.
"""
from bench import common  # noqa: I001  (monkey-patches first)

import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402

from services.stations import domain, geo, seed_scale, store  # noqa: E402
from services.stations.index import StationIndex  # noqa: E402
from unionhub_kit import clock  # noqa: E402

CHENGDU = {"lat": (30.55, 30.78), "lng": (103.93, 104.20)}  # the urban districts
GARZE = "5133"


def seed_if_needed(db, visits):
    have = db.stations.estimated_document_count()
    if have >= 7473 and db.stations.find_one({"_id": seed_scale.seed_id(0)}, {"_id": 1}):
        common.say("using %d stations and %d visits already in %s" % (
            have, db.visits.estimated_document_count(), db.name))
        return have, db.visits.estimated_document_count()
    common.say("seeding %s: 7,473 stations, %d visits ..." % (db.name, visits))
    started = time.time()
    out = seed_scale.seed(db, 7473, visits, drop=True)
    common.say("seeded in %.0fs" % (time.time() - started))
    return out["stations"], out["visits"]


def points(rng):
    garze = [s for s in geo.seats() if s[0].startswith(GARZE)]

    def chengdu():
        return rng.uniform(*CHENGDU["lat"]), rng.uniform(*CHENGDU["lng"])

    def ganzi():
        # a rider on the road somewhere in a Garze county: up to 30 km from its seat
        _, _, lat, lng = rng.choice(garze)
        return geo.offset(lat, lng, rng.uniform(-30000, 30000), rng.uniform(-30000, 30000))
    return chengdu, ganzi


def query_mix(rng):
    chengdu, ganzi = points(rng)
    amenities = ["hot_water", "charging"]

    def q(where, radius=None, **extra):
        def make():
            lat, lng = where()
            params = [("near", "%.5f,%.5f" % (lat, lng))]
            if radius:
                params.append(("radius_m", radius))
            for k, v in extra.items():
                params += [(k, x) for x in (v if isinstance(v, list) else [v])]
            return params
        return make
    return {
        "chengdu": q(chengdu),
        "chengdu_amenities": q(chengdu, amenity=amenities),
        "chengdu_open_now": q(chengdu, open_now="true"),
        "chengdu_amenities_open_now": q(chengdu, amenity=amenities, open_now="true"),
        "ganzi_50km": q(ganzi, 50000),
        "ganzi_50km_amenities": q(ganzi, 50000, amenity=amenities),
        "ganzi_50km_open_now": q(ganzi, 50000, open_now="true"),
        "ganzi_50km_amenities_open_now": q(ganzi, 50000, amenity=amenities, open_now="true"),
    }


def path_of(params):
    return "/api/v1/stations?" + urllib.parse.urlencode(params)


def raw_store(db, rng, n=500):
    """The store alone: ``find_one`` by ``_id`` of random stations; the service's nearest search without gateway
    and RPC (the in-memory index: its revision check against the store, then the walk), and the same walk reading
    every cell from the store instead (what the index saves)."""
    ids = [d["_id"] for d in db.stations.find({}, {"_id": 1})]
    point = common.sequential(lambda i: db.stations.find_one({"_id": rng.choice(ids)}), n)
    chengdu, ganzi = points(rng)
    now = clock.now()
    index = StationIndex()
    t0 = time.perf_counter()
    index.sync(db)
    level = {"index_load_s": round(time.perf_counter() - t0, 2)}
    for name, where, radius in (("chengdu", chengdu, 3000), ("ganzi_50km", ganzi, 50000)):
        level["index " + name] = common.sequential(
            lambda i: index.nearest(db, *where(), radius, {}, now, 20), n)
        level["store cells " + name] = common.sequential(
            lambda i: domain.nearest(lambda keys: store.stations_in_cells(db, keys), *where(), radius, {}, now, 20),
            max(50, n // 10))
    return point, level


def check_ins(st, db, concurrency, duration):
    """Members check in at random seeded stations (a fresh member token per connection and round)."""
    codes = [d["code"] for d in db.stations.find({"status": "open"}, {"code": 1})]
    rng = random.Random(9)
    before = (db.counters.find_one({"_id": "r:510000|%s" % domain.month_of(clock.now())}) or {}).get(
        "visits", 0)
    tokens = [common.staff_token(role="member", scope=None) for _ in range(2000)]

    def one(http, i):
        http.token = rng.choice(tokens)
        status, _ = http.request("POST", "/api/v1/stations/%s/visits" % rng.choice(codes))
        return status
    res = common.http_load(one, st.url, concurrency=concurrency, duration=duration)
    created = res["status"].get("201", 0)
    t0 = time.time()
    month = domain.month_of(clock.now())
    while time.time() - t0 < 120:
        now_count = (db.counters.find_one({"_id": "r:510000|%s" % month}) or {}).get("visits", 0)
        if now_count - before >= created:
            break
        time.sleep(0.2)
    res["visits_created"] = created
    res["counted_by_events"] = now_count - before
    res["counters_caught_up_after_s"] = round(time.time() - t0, 1)
    return res


def figures(res):
    """``(name, value, unit)`` rows for ``make bench``'s table."""
    out = []
    for name in ("chengdu", "chengdu_amenities_open_now", "ganzi_50km", "ganzi_50km_amenities_open_now",
                 "gateway_get_station"):
        r = res["phases"].get(name) or {}
        out += [("stations %s" % name, r.get("per_s"), "req/s"), ("stations %s p95" % name, r.get("p95_ms"), "ms")]
    ci = res.get("check_ins") or {}
    out.append(("stations check-ins (+ event)", ci.get("per_s"), "req/s"))
    return out


def main():
    visits = common.env_int("BENCH_STATIONS_VISITS", 2820000)
    concurrency = common.concurrency(16)
    duration = common.duration(10.0)
    prefix = os.environ.get("BENCH_STATIONS_PREFIX")
    extra = {"UNIONHUB_DB_PREFIX": prefix} if prefix else None
    rng = random.Random(14)
    with common.stack(extra_env=extra) as st:
        db = st.db("stations")
        n_stations, n_visits = seed_if_needed(db, visits)
        point, store_level = raw_store(db, rng)
        results = {"stations": n_stations, "visits": n_visits, "concurrency": concurrency, "duration_s": duration,
                   "load_average_before": os.getloadavg(), "phases": {}}
        single = common.Http(st.url)
        for name, make in query_mix(rng).items():
            sizes = []
            common.say("phase %s ..." % name)

            def one(http, i, make=make, sizes=sizes):
                status, body = http.request("GET", path_of(make()))
                if status == 200:
                    sizes.append(len(body["items"]))
                return status
            res = common.http_load(one, st.url, concurrency=concurrency, duration=duration, warmup=1.0)
            res["mean_items"] = round(sum(sizes) / len(sizes), 1) if sizes else 0
            res["empty_answers"] = sum(1 for s in sizes if s == 0)
            res["one_at_a_time"] = common.sequential(lambda i: single.request("GET", path_of(make())), 50)
            results["phases"][name] = res
        ids = [d["_id"] for d in db.stations.find({}, {"_id": 1}).limit(3000)]
        common.say("phase gateway_get_station (the framework's point read) ...")
        res = common.http_load(lambda http, i: http.get("/api/v1/stations/%s" % rng.choice(ids)), st.url,
                               concurrency=concurrency, duration=duration, warmup=1.0)
        res["one_at_a_time"] = common.sequential(lambda i: single.get("/api/v1/stations/%s" % rng.choice(ids)), 50)
        res["mean_items"] = 1
        results["phases"]["gateway_get_station"] = res
        single.close()
        common.say("phase check_ins ...")
        results["check_ins"] = check_ins(st, db, concurrency, duration)
        results["raw_store_point_lookup"] = point
        results["store_level_nearest"] = store_level
        results["load_average_after"] = os.getloadavg()
        base = point["p95_ms"] or 1
        results["ratios_store_level_p95_vs_point_lookup_p95"] = {
            n: round(r["p95_ms"] / base, 1) for n, r in store_level.items() if isinstance(r, dict)}
        results["ratios_p95_vs_point_lookup_p95"] = {n: round(r["p95_ms"] / base, 1) for n, r in
                                                     results["phases"].items() if r.get("p95_ms")}
        base1 = point["p50_ms"] or 1
        results["ratios_one_at_a_time_p95_vs_point_lookup_p95"] = {
            n: round(r["one_at_a_time"]["p95_ms"] / base, 1) for n, r in results["phases"].items()}
        results["ratios_one_at_a_time_p50_vs_point_lookup_p50"] = {
            n: round(r["one_at_a_time"]["p50_ms"] / base1, 1) for n, r in results["phases"].items()}
    path = common.write_result("stations", results)
    rows = [(n, r["per_s"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["one_at_a_time"]["p50_ms"],
             r["one_at_a_time"]["p95_ms"], r["mean_items"], r["status"]) for n, r in results["phases"].items()]
    for name, r in store_level.items():
        if name == "index_load_s":
            continue
        rows.append(("%s (no gateway)" % name, r["per_s"], r["p50_ms"], r["p95_ms"], r["p99_ms"],
                     r["p50_ms"], r["p95_ms"], None, ""))
    rows.append(("raw store find_one", point["per_s"], point["p50_ms"], point["p95_ms"], point["p99_ms"],
                 point["p50_ms"], point["p95_ms"], None, ""))
    ci = results["check_ins"]
    rows.append(("check-ins (+ event)", ci["per_s"], ci["p50_ms"], ci["p95_ms"], ci["p99_ms"], None, None, None,
                 ci["status"]))
    print("stations: %s stations, %s visits, %d connections, %.0fs per phase, load average %.1f -> %.1f" % (
        n_stations, n_visits, concurrency, duration, results["load_average_before"][0],
        results["load_average_after"][0]))
    print(common.table(rows, ["phase", "q/s", "p50 ms", "p95 ms", "p99 ms", "p50 1-at-a-time", "p95 1-at-a-time",
                              "items", "status"]))
    print("check-ins: %d created, %d counted by their events (caught up %.1fs after the load)" % (
        ci["visits_created"], ci["counted_by_events"], ci["counters_caught_up_after_s"]))
    print("written to %s" % path)


if __name__ == "__main__":
    main()

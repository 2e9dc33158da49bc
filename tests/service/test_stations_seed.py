"""``python -m services.stations.seed_scale`` on the real store, at a size a test can afford: stations in their
counties and shaped as the service writes them, visits over twelve months, and counters that equal a count of the
visits (what the service's event handler would have left)."""
import collections
import datetime
import re

from services.stations import domain, geo, seed_scale, store
from services.stations.index import StationIndex
from unionhub_kit import clock, regions
from unionhub_kit.config import db_name


def test_seed_scale_loads_stations_visits_and_their_counters(store_uri, db_prefix, mongo, monkeypatch, capsys):
    monkeypatch.setenv("MONGO_URI", store_uri)
    monkeypatch.setenv("UNIONHUB_DB_PREFIX", db_prefix)
    assert seed_scale.main(["--stations", "120", "--visits", "3000", "--batch", "700"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"visits +3000 / 3000", out) and "done in" in out
    assert seed_scale.main(["--stations", "120", "--visits", "3000"]) == 1  # seeded already: needs --drop
    db = mongo[db_name("stations", {"DB_PREFIX": db_prefix})]
    stations = list(db.stations.find())
    assert len(stations) == 120 and len({s["code"] for s in stations}) == 120
    for s in stations:
        assert geo.nearest_seats(s["location"]["lat"], s["location"]["lng"])[0][1] == s["region_code"]
        assert s["cells"] == geo.cell_keys(s["location"]["lat"], s["location"]["lng"])
        assert regions.is_known_code(s["region_code"]) and s["prefecture_code"] == s["region_code"][:4] + "00"
        assert len(s["_id"]) == 24 and domain.normalize_code(s["code"]) == s["code"]
    visits = list(db.visits.find())
    assert len(visits) == 3000
    months = collections.Counter(v["month"] for v in visits)
    assert 12 <= len(months) <= 13 and max(months) == domain.month_of(clock.now())
    year_ago = clock.now() - datetime.timedelta(days=365)
    assert all(year_ago <= v["at"] <= clock.now() and domain.month_of(v["at"]) == v["month"] for v in visits)
    pieces = seed_scale.year_months(clock.now())
    assert pieces[0][1] >= year_ago - datetime.timedelta(seconds=5) and len(pieces) in (12, 13)
    shares = seed_scale.shares(pieces, clock.now())
    full = [sh / (end - start).total_seconds() for (_, start, end), sh in zip(pieces, shares)]
    assert 2.0 < full[-1] / full[0] < 2.3  # visits per day grew 126 % over the year
    # counters = a count of the visits, per station and month, and per province/prefecture/county and month
    expected, visitors = collections.Counter(), collections.defaultdict(set)
    for v in visits:
        for key in domain.counter_keys(domain.visited_data(v)):
            expected[(key, v["month"])] += 1
            visitors[(key, v["month"])].add(v["user_id"])
    got = {(d["key"], d["month"]): d for d in db.counters.find({"month": {"$exists": True}})}
    assert {k: d["visits"] for k, d in got.items()} == dict(expected)
    assert {k: d["visitors"] for k, d in got.items()} == {k: len(u) for k, u in visitors.items()}
    assert any(d["visitors"] < d["visits"] for d in got.values())  # riders come back
    assert store.open_counts(db, ["510000"]) == {"510000": 120}
    # this month's visitor marks exist (a new check-in of the same member must not count a second visitor)
    this_month = max(months)
    assert db.visitor_marks.count_documents({}) == sum(len(u) for (k, m), u in visitors.items() if m == this_month)
    # the seeded stations are found nearest first
    s = stations[0]
    index = StationIndex()
    hits = index.nearest(db, s["location"]["lat"], s["location"]["lng"], 500, {"status": "any"}, clock.now(), 5)
    assert hits[0][1]["_id"] == s["_id"] and hits[0][0] == 0 and index.rev == store.current_rev(db) >= 120
    assert sorted(d["rev"] for d in stations) == list(range(index.rev - 119, index.rev + 1))


def test_the_index_sees_every_write_committed_before_a_search(store_uri, db_prefix, mongo):
    """Two processes' indexes over one store: a station written through one is found by the other's next search,
    also after a move (its old cells forget it)."""
    from unionhub_kit.mongo import transaction
    db = mongo[db_name("stations", {"DB_PREFIX": db_prefix})]
    store.ensure_indexes(db)
    a, b = StationIndex(), StationIndex()
    now = clock.now()
    here = {"lat": 30.6571, "lng": 104.0806}
    assert a.nearest(db, here["lat"], here["lng"], 1000, {}, now, 5) == []
    doc = domain.station_doc(store.new_id(), {"name": "站", "kind": "outdoor", "region_code": "510104", "address": "某路",
                                               "location": here, "opening_hours": [], "amenities": [], "code": "ABCDEF"},
                             now, "test")

    def create(session):
        doc["rev"] = store.next_revs(db, 1, session)
        store.insert_station(db, doc, session)
    transaction(db, create)
    assert [d["_id"] for _, d in b.nearest(db, here["lat"], here["lng"], 1000, {"status": "any"}, now, 5)] == \
        [doc["_id"]]
    assert [d["_id"] for _, d in a.nearest(db, here["lat"], here["lng"], 1000, {"status": "any"}, now, 5)] == \
        [doc["_id"]]
    there = {"lat": 30.05, "lng": 101.96}
    moved = domain.with_place(dict(doc, location=there))

    def move(session):
        store.update_station(db, doc["_id"], {"location": there, "cells": moved["cells"],
                                              "rev": store.next_revs(db, 1, session)}, now, session)
    transaction(db, move)
    assert a.nearest(db, here["lat"], here["lng"], 1000, {"status": "any"}, now, 5) == []
    assert [d["_id"] for _, d in a.nearest(db, there["lat"], there["lng"], 1000, {"status": "any"}, now, 5)] == \
        [doc["_id"]]


def test_the_stations_step_of_make_seed_scale(store_uri, db_prefix, mongo, monkeypatch):
    """``deploy.seed_scale`` runs ``run(ctx)``: visits scale with the users loaded and come from the population's
    users; the step is done once."""
    import pymongo

    from deploy.seed_scale import Context
    from unionhub_kit import population
    monkeypatch.setenv("MONGO_URI", store_uri)
    monkeypatch.setenv("UNIONHUB_DB_PREFIX", db_prefix)
    monkeypatch.setattr(seed_scale, "STATIONS", 80)
    client = pymongo.MongoClient(store_uri, tz_aware=True)
    ctx = Context(client, 15000, 5000, {"coupons": 0, "inbox": 0})
    out = seed_scale.run(ctx)
    assert out["stations"] == 80 and out["visits"] == round(2820000 * 15000 / population.USERS) == 5640
    db = mongo[db_name("stations", {"DB_PREFIX": db_prefix})]
    users = {population.user_id(i) for i in range(15000)}
    assert {v["user_id"] for v in db.visits.find({}, {"user_id": 1})} <= users
    assert seed_scale.run(ctx) is None and db.visits.count_documents({}) == 5640  # done once

"""Stations through the gateway, every process started as `make run` starts them: creating and changing stations in
scope, nearest-first search with its filters, check-ins by poster code with the 30-minute rule, visit counters and
statistics, events to an integrator's webhook (and nothing in the inbox), and every bad input of the issue refused
with a problem document."""
import datetime
import random
import re
import time
import uuid

import pytest
import requests

from services.stations import geo
from support import client
from support.client import admin_token, auth, member_token, problem, staff_token
from tests.service.notify_support import Receiver

WAIT = 30
CST = datetime.timezone(datetime.timedelta(hours=8))
ALWAYS = [{"days": [1, 2, 3, 4, 5, 6, 7], "open": "00:00", "close": "24:00"}]


def call(stack, method, path, token=None, body=None, headers=None, **params):
    h = dict(auth(token) if token else {}, **(headers or {}))
    return requests.request(method, stack.url + path, json=body, headers=h, params=params or None, timeout=20)


def eventually(fn, what, timeout=WAIT):
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.time() < deadline, "%s did not happen within %ss" % (what, timeout)
        time.sleep(0.2)


def spot(county="510104", rng=random):
    """A point of ``county`` no other test of this module uses (random, inside the county's approximation)."""
    lat, lng = geo.place_in_county(rng, county)
    return {"lat": round(lat, 6), "lng": round(lng, 6)}


def hhmm(dt):
    return dt.strftime("%H:%M")


def body(where, **kw):
    return dict({"name": "户外劳动者服务站 %s" % uuid.uuid4().hex[:4], "kind": "outdoor", "region_code": "510104",
                 "address": "成都市锦江区东大街1号", "location": where, "opening_hours": ALWAYS,
                 "amenities": ["water", "hot_water", "charging", "restroom"]}, **kw)


def create(stack, token, where, **kw):
    r = call(stack, "POST", "/api/v1/stations", token, body(where, **kw))
    assert r.status_code == 201, r.text
    return r.json()


def near(stack, point, **params):
    r = call(stack, "GET", "/api/v1/stations", near="%s,%s" % (point["lat"], point["lng"]), **params)
    assert r.status_code == 200, r.text
    return r.json()


def moved(point, north_m, east_m):
    lat, lng = geo.offset(point["lat"], point["lng"], north_m, east_m)
    return {"lat": round(lat, 6), "lng": round(lng, 6)}


@pytest.fixture(scope="module")
def admins(stack):
    admin = admin_token(stack)
    chengdu = staff_token(stack, admin, "st-cd-%s" % uuid.uuid4().hex[:6], "union_admin", org_code="510100")
    return {"province": admin, "chengdu": chengdu}


# ---- POST /api/v1/stations ------------------------------------------------------------------------------------
def test_union_staff_open_a_station_with_a_poster_code(stack, admins):
    here = spot()
    r = call(stack, "POST", "/api/v1/stations", admins["chengdu"], body(here, contact_phone="028-86661234"))
    assert r.status_code == 201, r.text
    st = r.json()
    assert re.fullmatch(r"[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{6}", st["code"]), st
    assert st["status"] == "open" and st["location"] == here and st["region_name"] == "锦江区"
    assert st["open_now"] is True and st["contact_phone"] == "028-86661234"
    codes = {create(stack, admins["chengdu"], spot())["code"] for _ in range(5)} | {st["code"]}
    assert len(codes) == 6  # random codes, not a counter: six stations, six unrelated codes
    got = call(stack, "GET", "/api/v1/stations/" + st["id"])
    assert got.status_code == 200 and got.json()["code"] == st["code"] and got.json()["visits_this_month"] == 0
    problem(call(stack, "GET", "/api/v1/stations/000000000000000000000000"), 404, "NOT_FOUND")
    key = {"Idempotency-Key": "st-" + uuid.uuid4().hex}
    b = body(spot())
    first = call(stack, "POST", "/api/v1/stations", admins["chengdu"], b, key)
    assert first.status_code == 201
    assert call(stack, "POST", "/api/v1/stations", admins["chengdu"], b, key).json() == first.json()


def test_a_station_outside_the_callers_scope_is_refused(stack, admins):
    kangding = spot("513301")
    problem(call(stack, "POST", "/api/v1/stations", admins["chengdu"],
                 body(kangding, region_code="513301", address="康定市炉城镇")), 403, "OUT_OF_SCOPE")
    st = create(stack, admins["province"], kangding, region_code="513301", address="康定市炉城镇")
    problem(call(stack, "PATCH", "/api/v1/stations/" + st["id"], admins["chengdu"], {"amenities": ["aed"]}), 403,
            "OUT_OF_SCOPE")
    mine = create(stack, admins["chengdu"], spot())
    problem(call(stack, "PATCH", "/api/v1/stations/" + mine["id"], admins["chengdu"],
                 {"region_code": "513301", "location": kangding}), 403, "OUT_OF_SCOPE")
    problem(call(stack, "POST", "/api/v1/stations", None, body(spot())), 401, "UNAUTHORIZED")
    problem(call(stack, "POST", "/api/v1/stations", member_token(stack), body(spot())), 403, "FORBIDDEN")


@pytest.mark.parametrize("change,field", [
    ({"location": {"lat": 39.9042, "lng": 116.4074}}, "location"),        # Beijing: outside Sichuan's box
    ({"location": {"lat": 104.0633, "lng": 30.6598}}, "location"),        # latitude and longitude swapped
    ({"location": {"lat": "30.6598", "lng": "104.0633"}}, "location.lat"),  # not numbers
    ({"location": {"lat": 30.6598}}, "location.lng"),
    ({"location": {"lat": 30.05, "lng": 101.96}}, "location"),            # Kangding (Garze), claimed for 510104
    ({"opening_hours": [{"days": [1], "open": "8:00", "close": "20:00"}]}, "opening_hours"),
    ({"opening_hours": [{"days": [1], "open": "08:00", "close": "25:00"}]}, "opening_hours"),
    ({"opening_hours": [{"days": [0, 8], "open": "08:00", "close": "20:00"}]}, "opening_hours"),
    ({"opening_hours": [{"days": [], "open": "08:00", "close": "20:00"}]}, "opening_hours"),
    ({"opening_hours": []}, "opening_hours"),
    ({"amenities": ["water", "swimming_pool"]}, "amenities"),
    ({"kind": "hotel"}, "kind"),
    ({"region_code": "519999"}, "region_code"),
    ({"name": None}, "name"),
])
def test_bad_stations_are_refused(stack, admins, change, field):
    b = {k: v for k, v in body(spot(), **change).items() if v is not None}
    problem(call(stack, "POST", "/api/v1/stations", admins["province"], b), 400, "VALIDATION_ERROR", field)


# ---- PATCH /api/v1/stations/{id}, check-ins ---------------------------------------------------------------------
def test_patch_close_and_reopen_a_station(stack, admins):
    st = create(stack, admins["chengdu"], spot())
    r = call(stack, "PATCH", "/api/v1/stations/" + st["id"], admins["chengdu"],
             {"amenities": ["water", "aed"], "name": "新名字站点"})
    assert r.status_code == 200 and r.json()["amenities"] == ["water", "aed"] and r.json()["name"] == "新名字站点"
    problem(call(stack, "PATCH", "/api/v1/stations/" + st["id"], admins["chengdu"], {}), 400, "VALIDATION_ERROR")
    problem(call(stack, "PATCH", "/api/v1/stations/" + st["id"], admins["chengdu"], {"status": "gone"}), 400,
            "VALIDATION_ERROR", "status")
    problem(call(stack, "PATCH", "/api/v1/stations/" + st["id"], admins["chengdu"],
                 {"location": {"lat": 30.05, "lng": 101.96}}), 400, "VALIDATION_ERROR", "location")
    problem(call(stack, "PATCH", "/api/v1/stations/000000000000000000000000", admins["chengdu"], {"name": "xx"}), 404,
            "NOT_FOUND")
    r = call(stack, "PATCH", "/api/v1/stations/" + st["id"], admins["chengdu"], {"status": "closed"})
    assert r.status_code == 200 and r.json()["status"] == "closed" and r.json()["open_now"] is False
    member = member_token(stack)
    problem(call(stack, "POST", "/api/v1/stations/%s/visits" % st["code"], member), 409, "CLOSED")
    assert st["id"] not in [s["id"] for s in near(stack, st["location"], radius_m=100)["items"]]
    assert st["id"] in [s["id"] for s in near(stack, st["location"], radius_m=100, status="closed")["items"]]
    r = call(stack, "PATCH", "/api/v1/stations/" + st["id"], admins["chengdu"], {"status": "open"})
    assert r.status_code == 200 and r.json()["status"] == "open"
    assert call(stack, "POST", "/api/v1/stations/%s/visits" % st["code"], member).status_code == 201


def test_check_in_once_per_30_minutes_and_counted_by_the_events(stack, admins):
    st = create(stack, admins["chengdu"], spot())
    member, other = member_token(stack), member_token(stack)
    r = call(stack, "POST", "/api/v1/stations/%s/visits" % st["code"], member)
    assert r.status_code == 201, r.text
    visit = r.json()
    assert visit["station_id"] == st["id"] and visit["visit_id"] and visit["at"].endswith("Z")
    again = call(stack, "POST", "/api/v1/stations/%s/visits" % st["code"].lower(), member)  # typed in lower case
    assert again.status_code == 200 and again.json() == visit
    assert call(stack, "POST", "/api/v1/stations/%s/visits" % st["code"], other).status_code == 201
    eventually(lambda: call(stack, "GET", "/api/v1/stations/" + st["id"]).json()["visits_this_month"] == 2,
               "two visits counted")
    time.sleep(1)
    assert call(stack, "GET", "/api/v1/stations/" + st["id"]).json()["visits_this_month"] == 2
    problem(call(stack, "POST", "/api/v1/stations/ZZZZZZ/visits", member), 404, "NOT_FOUND")
    problem(call(stack, "POST", "/api/v1/stations/not-a-code/visits", member), 404, "NOT_FOUND")
    problem(call(stack, "POST", "/api/v1/stations/%s/visits" % st["code"], None), 401, "UNAUTHORIZED")
    problem(call(stack, "POST", "/api/v1/stations/%s/visits" % st["code"], admins["chengdu"]), 403, "FORBIDDEN")


def test_a_racing_double_check_in_makes_one_visit(stack, admins):
    import concurrent.futures
    st = create(stack, admins["chengdu"], spot())
    member = member_token(stack)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: call(stack, "POST", "/api/v1/stations/%s/visits" % st["code"], member),
                                range(6)))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201], [a.text for a in answers]
    assert len({a.json()["visit_id"] for a in answers}) == 1
    eventually(lambda: call(stack, "GET", "/api/v1/stations/" + st["id"]).json()["visits_this_month"] == 1,
               "one visit counted")


# ---- GET /api/v1/stations -------------------------------------------------------------------------------------
def test_nearest_first_with_radius_amenity_kind_region_and_open_now(stack, admins):
    centre = spot("510107")  # 武侯区
    now = datetime.datetime.now(CST)
    later = [{"days": [1, 2, 3, 4, 5, 6, 7], "open": hhmm(now + datetime.timedelta(hours=2)),
              "close": hhmm(now + datetime.timedelta(hours=3))}]
    # open from an hour ago until two hours before now tomorrow: runs past midnight
    overnight = [{"days": [1, 2, 3, 4, 5, 6, 7], "open": hhmm(now - datetime.timedelta(hours=1)),
                  "close": hhmm(now - datetime.timedelta(hours=2))}]
    made = {}
    for name, north, kw in [("a", 120, {}), ("b", 260, {"amenities": ["water"], "kind": "courier_home"}),
                            ("c", 400, {"opening_hours": later}), ("d", 650, {"opening_hours": overnight}),
                            ("far", 4000, {})]:
        made[name] = create(stack, admins["chengdu"], moved(centre, north, 0), region_code="510107",
                            address="武侯区某路", **kw)
    ids = {v["id"]: k for k, v in made.items()}

    def names(page):
        return [ids[s["id"]] for s in page["items"] if s["id"] in ids]
    page = near(stack, centre, radius_m=1000)
    assert names(page) == ["a", "b", "c", "d"]
    dists = [s["distance_m"] for s in page["items"]]
    assert dists == sorted(dists) and all(isinstance(d, int) for d in dists)
    assert abs(page["items"][[s["id"] for s in page["items"]].index(made["a"]["id"])]["distance_m"] - 120) <= 2
    assert names(near(stack, centre, radius_m=300)) == ["a", "b"]
    assert names(near(stack, centre, radius_m=5000)) == ["a", "b", "c", "d", "far"]
    assert names(near(stack, centre)) == ["a", "b", "c", "d"]  # default radius 3000
    assert names(near(stack, centre, radius_m=1000, amenity="charging")) == ["a", "c", "d"]
    assert names(near(stack, centre, radius_m=1000, amenity=["charging", "hot_water"])) == ["a", "c", "d"]
    assert names(near(stack, centre, radius_m=1000, amenity="water,restroom")) == ["a", "c", "d"]
    assert names(near(stack, centre, radius_m=1000, kind="courier_home")) == ["b"]
    assert names(near(stack, centre, radius_m=1000, open_now="true")) == ["a", "b", "d"]
    flags = {ids[s["id"]]: s["open_now"] for s in page["items"] if s["id"] in ids}
    assert flags == {"a": True, "b": True, "c": False, "d": True}
    assert names(near(stack, centre, radius_m=1000, region_code="5101")) == ["a", "b", "c", "d"]
    assert names(near(stack, centre, radius_m=1000, region_code="510104")) == []
    # pages of two, nearest first, nothing twice
    first = near(stack, centre, radius_m=1000, limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = near(stack, centre, radius_m=1000, limit=50, cursor=first["next_cursor"])
    both = [s["id"] for s in first["items"] + rest["items"]]
    assert len(both) == len(set(both)) and [ids[i] for i in both if i in ids] == ["a", "b", "c", "d"]


def test_far_from_everything_in_garze_the_nearest_within_50_km(stack, admins):
    seat = geo.seat_of("513332")  # 石渠县, the far north-west
    origin = {"lat": round(seat[2], 5), "lng": round(seat[3] + 0.05, 5)}
    st = create(stack, admins["province"], moved(origin, 30000, 0), region_code="513332", address="石渠县某乡")
    assert [s["id"] for s in near(stack, origin, radius_m=50000)["items"]][:1] == [st["id"]]
    assert near(stack, origin, radius_m=29000)["items"] == []


def test_without_near_ordered_by_code(stack, admins):
    for _ in range(3):
        create(stack, admins["chengdu"], spot())
    r = call(stack, "GET", "/api/v1/stations", limit=2, region_code="5101")
    assert r.status_code == 200, r.text
    codes = [s["code"] for s in r.json()["items"]]
    nxt = call(stack, "GET", "/api/v1/stations", limit=2, region_code="5101", cursor=r.json()["next_cursor"]).json()
    codes += [s["code"] for s in nxt["items"]]
    assert codes == sorted(codes) and len(set(codes)) == 4
    assert all("distance_m" not in s for s in nxt["items"])


@pytest.mark.parametrize("params,field", [
    ({"near": "30.65,104.06", "radius_m": "0"}, "radius_m"),
    ({"near": "30.65,104.06", "radius_m": "-5"}, "radius_m"),
    ({"near": "30.65,104.06", "radius_m": "50001"}, "radius_m"),
    ({"near": "30.65,104.06", "radius_m": "far"}, "radius_m"),
    ({"radius_m": "100"}, "radius_m"),
    ({"near": "104.06,30.65"}, "near"),               # swapped
    ({"near": "39.90,116.40"}, "near"),               # Beijing
    ({"near": "north,east"}, "near"),                 # not numbers
    ({"near": "30.65"}, "near"),
    ({"near": "nan,nan"}, "near"),
    ({"near": "30.65,104.06", "amenity": "jacuzzi"}, "amenity"),
    ({"near": "30.65,104.06", "kind": "hotel"}, "kind"),
    ({"near": "30.65,104.06", "open_now": "maybe"}, "open_now"),
    ({"region_code": "5199"}, "region_code"),
    ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
    ({"near": "30.65,104.06", "cursor": "QUJDREVG"}, "cursor"),
    ({"limit": "0"}, "limit"),
])
def test_bad_searches_are_refused(stack, params, field):
    problem(call(stack, "GET", "/api/v1/stations", **params), 400, "VALIDATION_ERROR", field)


# ---- GET /api/v1/admin/stats/stations -------------------------------------------------------------------------
def test_stats_per_prefecture_and_county_from_counters(stack, admins):
    before = call(stack, "GET", "/api/v1/admin/stats/stations", admins["province"]).json()
    mine = {s: create(stack, admins["province"], spot("513301"), region_code="513301", address="康定市")
            for s in ("x", "y")}
    riders = [member_token(stack) for _ in range(2)]
    for token, code in [(riders[0], mine["x"]["code"]), (riders[0], mine["y"]["code"]), (riders[1], mine["x"]["code"])]:
        assert call(stack, "POST", "/api/v1/stations/%s/visits" % code, token).status_code == 201

    def garze(doc):
        return next(i for i in doc["items"] if i["region_code"] == "513300")
    old = garze(before)

    def counted():
        doc = call(stack, "GET", "/api/v1/admin/stats/stations", admins["province"], group_by="prefecture").json()
        return doc if garze(doc)["visits"] == old["visits"] + 3 else None
    doc = eventually(counted, "three visits counted")
    assert doc["month"] == datetime.datetime.now(CST).strftime("%Y-%m") and doc["group_by"] == "prefecture"
    g = garze(doc)
    assert g["stations_open"] == old["stations_open"] + 2
    assert g["distinct_visitors"] == old["distinct_visitors"] + 2
    assert len(doc["items"]) == 21 and doc["total"]["region_code"] == "510000"
    county = call(stack, "GET", "/api/v1/admin/stats/stations", admins["province"], group_by="county").json()
    kd = next(i for i in county["items"] if i["region_code"] == "513301")
    assert kd["visits"] >= 3 and kd["region_name"] == "康定市"
    scoped = call(stack, "GET", "/api/v1/admin/stats/stations", admins["chengdu"], group_by="county").json()
    assert {i["region_code"][:4] for i in scoped["items"]} == {"5101"} and scoped["total"]["region_code"] == "510100"
    empty = call(stack, "GET", "/api/v1/admin/stats/stations", admins["province"], month="2001-01").json()
    assert sum(i["visits"] for i in empty["items"]) == 0
    problem(call(stack, "GET", "/api/v1/admin/stats/stations", admins["province"], month="2026-13"), 400,
            "VALIDATION_ERROR", "month")
    problem(call(stack, "GET", "/api/v1/admin/stats/stations", admins["province"], group_by="street"), 400,
            "VALIDATION_ERROR", "group_by")
    problem(call(stack, "GET", "/api/v1/admin/stats/stations", riders[0]), 403, "FORBIDDEN")


# ---- events -----------------------------------------------------------------------------------------------------
def test_events_reach_a_subscribed_webhook_and_no_inbox(stack, admins):
    integrator = staff_token(stack, admins["province"], "integ_st_%s" % uuid.uuid4().hex[:6], "integrator")
    receiver = Receiver()
    try:
        r = call(stack, "POST", "/api/v1/webhooks", integrator, {
            "url": receiver.url, "event_types": ["stations.station_visited", "stations.station_opened",
                                                 "stations.station_closed"], "secret": "whsec-" + uuid.uuid4().hex})
        assert r.status_code == 201, r.text
        st = create(stack, admins["chengdu"], spot())
        member = member_token(stack)
        visit = call(stack, "POST", "/api/v1/stations/%s/visits" % st["code"], member).json()
        call(stack, "PATCH", "/api/v1/stations/" + st["id"], admins["chengdu"], {"status": "closed"})

        def got():
            seen = {}
            for i in range(len(receiver.requests)):
                e = receiver.json(i)
                if e["data"].get("station_id") == st["id"]:
                    seen[e["type"]] = e
            return seen if len(seen) == 3 else None
        seen = eventually(got, "three station events delivered")
        v = seen["org.unionhub.stations.station_visited.v1"]["data"]
        assert v["visit_id"] == visit["visit_id"] and v["code"] == st["code"] and v["region_code"] == "510104"
        assert seen["org.unionhub.stations.station_opened.v1"]["data"]["location"] == st["location"]
        time.sleep(1)
        inbox = call(stack, "GET", "/api/v1/members/me/notifications", member).json()["items"]
        assert [n for n in inbox if "station" in str(n).lower()] == []
    finally:
        receiver.close()


def test_asyncapi_and_openapi_list_stations(stack):
    doc = call(stack, "GET", "/asyncapi.json").json()
    assert {"stations.station_opened", "stations.station_closed", "stations.station_visited"} <= set(doc["channels"])
    paths = call(stack, "GET", "/openapi.json").json()["paths"]
    assert {"/api/v1/stations", "/api/v1/stations/{station_id}", "/api/v1/stations/{code}/visits",
            "/api/v1/admin/stats/stations"} <= set(paths)


def test_a_redelivered_visit_event_counts_once(stack, admins):
    """The counters are kept by the events: the same station_visited delivered twice adds one visit."""
    from kombu import Connection

    from unionhub_kit import events, topology
    st = create(stack, admins["chengdu"], spot())
    member = member_token(stack)
    tap = client.EventTap(stack.env["AMQP_URI"], "stations", "station_visited")  # the event as a subscriber gets it
    visit = call(stack, "POST", "/api/v1/stations/%s/visits" % st["code"], member).json()
    eventually(lambda: call(stack, "GET", "/api/v1/stations/" + st["id"]).json()["visits_this_month"] == 1,
               "the visit counted")
    env = eventually(lambda: tap.messages(visit_id=visit["visit_id"]), "the station_visited event")[0]
    tap.close()
    # a second, unrelated visit published after the duplicate: once it is counted, the duplicate was handled
    second = dict(events.build("stations", "station_visited", dict(env["data"], visit_id="dup-probe",
                                                                   user_id="probe-user")))
    with Connection(stack.env["AMQP_URI"]) as conn:
        producer = conn.Producer(serializer="json")
        for body in (env, second):
            producer.publish(body, exchange=topology.event_exchange("stations"), routing_key="station_visited",
                             declare=[topology.event_exchange("stations")])
    eventually(lambda: call(stack, "GET", "/api/v1/stations/" + st["id"]).json()["visits_this_month"] == 2,
               "the probe counted")
    time.sleep(1)
    assert call(stack, "GET", "/api/v1/stations/" + st["id"]).json()["visits_this_month"] == 2

"""Rules of the stations service, free of broker and store: scope, poster codes, opening hours in Asia/Shanghai
time (also past midnight), the check-in window, months, the nearest-first walk, event data and the JSON views."""
import datetime
import secrets

from unionhub_kit import regions
from unionhub_kit.actors import require_scope  # noqa: F401  (a union_admin whose scope holds the region)
from unionhub_kit.errors import Conflict, NotFound, validation_error
from unionhub_kit.events import rfc3339

from . import geo
from .schemas import CODE_ALPHABET, CODE_LENGTH, CODE_RE

CST = datetime.timezone(datetime.timedelta(hours=8), "Asia/Shanghai")  # China has kept UTC+8 without DST since 1991
VISIT_WINDOW = datetime.timedelta(minutes=30)
FIRST_RING_M = 1500  # the nearest-first walk starts with this radius and doubles it


# ---- scope and errors -----------------------------------------------------------------------------------------
def must(doc, what):
    if doc is None:
        raise NotFound("No such %s." % what)
    return doc


def closed(code):
    return Conflict("Station %s is closed." % code, code="CLOSED")


def check_location(region_code, location):
    """400 unless ``location`` may lie in ``region_code``'s prefecture (see ``geo``'s approximation)."""
    prefecture = regions.prefecture_of(region_code)
    if not geo.prefecture_matches(prefecture, location["lat"], location["lng"]):
        found = regions.all_codes().get(geo.nearest_prefecture(location["lat"], location["lng"]))
        raise validation_error({"location": ["is not in %s (%s) but looks like %s." % (
            regions.all_codes().get(prefecture), prefecture, found)]})


# ---- poster codes ---------------------------------------------------------------------------------------------
def new_code():
    """A poster code: random (not a counter), from an alphabet without 0/O and 1/I/L."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(code):
    """The code as typed (any case, spaces and dashes ignored), or None when it cannot be a code."""
    c = "".join(ch for ch in str(code or "")[:32].upper() if ch not in " -")
    return c if CODE_RE.match(c) else None


# ---- time -----------------------------------------------------------------------------------------------------
def local(now):
    return now.astimezone(CST)


def month_of(now):
    """``YYYY-MM`` of ``now`` in Asia/Shanghai time."""
    return local(now).strftime("%Y-%m")


def previous_month(now):
    first = local(now).replace(day=1)
    return (first - datetime.timedelta(days=1)).strftime("%Y-%m")


def _minutes(hhmm):
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def is_open_at(opening_hours, now):
    """Whether a station with ``opening_hours`` is open at ``now`` (Asia/Shanghai): on day d, ``open``-``close``
    with close > open; a close earlier than open runs from d's ``open`` to the next day's ``close``."""
    t = local(now)
    day, minute = t.isoweekday(), t.hour * 60 + t.minute
    yesterday = 7 if day == 1 else day - 1
    for rule in opening_hours:
        start, end = _minutes(rule["open"]), _minutes(rule["close"])
        if start < end:
            if day in rule["days"] and start <= minute < end:
                return True
        elif (day in rule["days"] and minute >= start) or (yesterday in rule["days"] and minute < end):
            return True
    return False


# ---- the nearest-first walk -----------------------------------------------------------------------------------
def rings(radius_m):
    """The radii a nearest-first search covers in turn: 1.5 km, 3 km, 6 km ... up to ``radius_m``."""
    r = min(FIRST_RING_M, radius_m)
    out = [r]
    while r < radius_m:
        r = min(r * 2, radius_m)
        out.append(r)
    return out


def nearest(lookup, lat, lng, radius_m, flt, now, limit, after=None):
    """Up to ``limit + 1`` matching stations nearest first: ``[(millimetres, doc)]``.

    Covers growing circles (``rings``) with one level's grid cells (``geo.covering``; ``lookup(keys)`` gives the
    stations in them) until more than ``limit`` matches lie inside the circle covered (every station within it was a
    candidate, so they are the nearest), or the radius is reached."""
    hits = []
    for ring in rings(radius_m):
        hits = by_distance(lookup(geo.covering(lat, lng, ring)), lat, lng, flt, now, ring, after)
        if len(hits) > limit:
            break
    return hits[:limit + 1]


def matches(doc, flt, now):
    """Whether a station passes the search's filters other than place (kind, amenities, region, status, open now)."""
    if flt.get("status", "open") != "any" and doc["status"] != flt.get("status", "open"):
        return False
    if flt.get("kind") and doc["kind"] != flt["kind"]:
        return False
    if flt.get("amenity") and not set(flt["amenity"]) <= set(doc.get("amenities") or ()):
        return False
    if flt.get("region_code") and not doc["region_code"].startswith(flt["region_code"]):
        return False
    if flt.get("open_now") is not None and is_open_at(doc["opening_hours"], now) != flt["open_now"]:
        return False
    return True


def by_distance(docs, lat, lng, flt, now, within_m, after=None):
    """``[(millimetres, doc)]`` of the matching stations within ``within_m``, nearest first (ties by id), past the
    ``after`` key ``(millimetres, id)`` of a previous page."""
    out = []
    for d in docs:
        mm = round(1000 * geo.haversine_m(lat, lng, d["location"]["lat"], d["location"]["lng"]))
        if mm <= within_m * 1000 and (after is None or (mm, d["_id"]) > after) and matches(d, flt, now):
            out.append((mm, d))
    out.sort(key=lambda pair: (pair[0], pair[1]["_id"]))
    return out


def distance_cursor_key(mm, station_id):
    return "%d|%s" % (mm, station_id)


def parse_distance_key(key):
    mm, station_id = key.split("|", 1)
    return int(mm), station_id


DISTANCE_KEY_PATTERN = r"[0-9]{1,12}\|[0-9a-f]{24}"
CODE_KEY_PATTERN = r"[%s]{%d}" % (CODE_ALPHABET, CODE_LENGTH)


# ---- documents and events -------------------------------------------------------------------------------------
def station_doc(station_id, p, now, created_by):
    doc = dict(p, _id=station_id, status="open", created_at=now, updated_at=now, created_by=created_by)
    doc.setdefault("contact_phone", None)
    return with_place(doc)


def with_place(doc):
    """Add what a station is found by: its cells and prefecture."""
    doc["cells"] = geo.cell_keys(doc["location"]["lat"], doc["location"]["lng"])
    doc["prefecture_code"] = regions.prefecture_of(doc["region_code"])
    return doc


def stat_regions(region_code):
    """The region counters a station counts in: the province, its prefecture, and its county when it has one."""
    prefecture = regions.prefecture_of(region_code)
    return [regions.PROVINCE_CODE, prefecture] + ([region_code] if region_code != prefecture else [])


def open_deltas(before, after):
    """``{region code: +1/-1}``: how the open-station counters move when a station goes from ``before`` to ``after``
    (either may be None: created, or not a station)."""
    out = {}
    for doc, sign in ((before, -1), (after, 1)):
        if doc is not None and doc["status"] == "open":
            for code in stat_regions(doc["region_code"]):
                out[code] = out.get(code, 0) + sign
    return {k: v for k, v in out.items() if v}


def opened_data(doc):
    return {"station_id": doc["_id"], "code": doc["code"], "name": doc["name"], "kind": doc["kind"],
            "region_code": doc["region_code"], "location": dict(doc["location"]),
            "amenities": list(doc.get("amenities") or [])}


def closed_data(doc):
    return {"station_id": doc["_id"], "code": doc["code"], "name": doc["name"], "region_code": doc["region_code"]}


def visited_data(visit):
    return {"visit_id": visit["_id"], "station_id": visit["station_id"], "code": visit["code"],
            "region_code": visit["region_code"], "user_id": visit["user_id"], "at": rfc3339(visit["at"]),
            "month": visit["month"]}


def visit_doc(visit_id, station, user_id, now):
    return {"_id": visit_id, "station_id": station["_id"], "code": station["code"],
            "region_code": station["region_code"], "user_id": user_id, "at": now, "month": month_of(now)}


def counter_keys(data):
    """The counters a visit adds to: its station's, its county's and its prefecture's (``r:`` + code)."""
    return [data["station_id"]] + ["r:" + code for code in stat_regions(data["region_code"])]


# ---- views ----------------------------------------------------------------------------------------------------
FIELDS = ("code", "name", "kind", "region_code", "address", "location", "opening_hours", "amenities",
          "contact_phone", "status")


def station_view(doc, now, distance_m=None, visits_this_month=None):
    out = {"id": doc["_id"]}
    out.update({k: doc.get(k) for k in FIELDS})
    out["region_name"] = regions.all_codes().get(doc["region_code"])
    out["open_now"] = doc["status"] == "open" and is_open_at(doc["opening_hours"], now)
    if distance_m is not None:
        out["distance_m"] = int(round(distance_m))  # whole metres
    if visits_this_month is not None:
        out["visits_this_month"] = visits_this_month
    out["created_at"] = rfc3339(doc["created_at"])
    out["updated_at"] = rfc3339(doc["updated_at"])
    return out


def visit_view(doc):
    return {"visit_id": doc["_id"], "station_id": doc["station_id"], "code": doc["code"], "at": rfc3339(doc["at"])}


def scope_region(scope):
    """The six-digit region code a scope prefix stands for (``51`` -> ``510000``), or None for an organisation."""
    code = str(scope or "")
    code = code + "0" * (6 - len(code)) if len(code) in (2, 4) else code
    return code if regions.is_known_code(code) else None


def stats_item(code, stations_open, counted):
    return {"region_code": code, "region_name": regions.all_codes().get(code) if code else None,
            "stations_open": stations_open, "visits": counted.get("visits", 0),
            "distinct_visitors": counted.get("visitors", 0)}


def stats_groups(group_by, scope):
    """The region codes of the groups in ``scope`` (prefectures or counties), in code order."""
    if group_by == "prefecture":
        codes = [p["code"] for p in regions.prefectures()]
    else:
        codes = [c["code"] for c in regions.counties()]
    return [c for c in codes if regions.in_scope(c, scope)]

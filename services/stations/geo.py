"""Geometry of the stations service, free of broker and store: distances, the grid cells stations are indexed by,
and where Sichuan's prefectures and counties are.

Distances are haversine great-circle metres on a sphere of the mean Earth radius (6,371,008.8 m).

Cells (why not ``2dsphere``): the embedded store has ``$near``/``$geoNear``/``$geoWithin`` over a ``2dsphere`` index,
but answered them in 400-550 ms p50 over 7,473 stations here (raw ``_id`` lookup 0.5 ms). So each station carries
its cell keys, one per level of a plain latitude/longitude grid (``L:i:j``, cells of 0.005° × 2^L, level 0 about
0.55 km to level 7 about 71 km), in one indexed array; a search covers its circle with the cells of one level and
refines the candidates by haversine distance.

Where things are (an approximation, documented): no county polygons are available here, only one point per county,
its seat (``data/sichuan_county_seats.csv``, from the MIT-licensed ``cpca`` package). A county is approximated by the
part of the province nearer its seat than any other seat (the seats' Voronoi cells):

* ``in_sichuan_box``: Sichuan's bounding box, 26.05-34.32 °N, 97.35-108.55 °E (its official extreme points).
* ``prefecture_matches``: a location is accepted for a prefecture when that prefecture has a seat no farther than
  ``1.5 ×`` the nearest seat + 10 km (a border margin: Voronoi cells of seats are not the real borders, and a station
  a few kilometres across a real border must not be refused). A Chengdu point claimed for Garze is refused (its
  nearest Garze seat is ~170 km off, its nearest seat a few km).
* ``place_in_county`` (seed data): a point around the county's seat, normal with sigma one third of a radius that
  is 0.45 × the distance to the nearest other seat (at most 25 km), cut off at that radius, so the point is nearer
  its own seat than any other and lies in the county's Voronoi cell. Counties on the Jinsha river or the Qinghai
  border (their seats are within a few km of Tibet or Qinghai) get points east of their seat only. Rivers and lakes
  are not known here: a point can fall on water.
"""
import csv
import functools
import math
import os

EARTH_RADIUS_M = 6371008.8
SICHUAN_BOX = {"lat_min": 26.05, "lat_max": 34.32, "lng_min": 97.35, "lng_max": 108.55}
BASE_CELL_DEG = 0.005
LEVELS = 8
PREFECTURE_SLACK_RATIO = 1.5
PREFECTURE_SLACK_M = 10000
PLACE_FRACTION = 0.45
PLACE_MAX_M = 25000
# county seats on the western or northern border (Jinsha river to Tibet, Qinghai): place stations east of the seat
EAST_ONLY = ("513330", "513331", "513332", "513335", "513338")
DATA = os.path.join(os.path.dirname(__file__), "data", "sichuan_county_seats.csv")


def haversine_m(lat1, lng1, lat2, lng2):
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def in_sichuan_box(lat, lng):
    b = SICHUAN_BOX
    return b["lat_min"] <= lat <= b["lat_max"] and b["lng_min"] <= lng <= b["lng_max"]


# ---- grid cells -----------------------------------------------------------------------------------------------
def cell_size(level):
    return BASE_CELL_DEG * (2 ** level)


def cell_key(level, lat, lng):
    size = cell_size(level)
    return "%d:%d:%d" % (level, math.floor(lat / size), math.floor(lng / size))


def cell_keys(lat, lng):
    """Every level's cell of a point (what a station document carries in ``cells``)."""
    return [cell_key(level, lat, lng) for level in range(LEVELS)]


def degrees_around(lat, radius_m):
    """Half-height and half-width in degrees of a box that holds the circle of ``radius_m`` around latitude ``lat``."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    dlng = dlat / max(0.01, math.cos(math.radians(min(89.0, abs(lat) + dlat))))
    return dlat, dlng


def level_for(radius_m, lat):
    """The finest level whose cells cover a circle of ``radius_m`` with at most about 5 x 6 cells."""
    dlat, _ = degrees_around(lat, radius_m)
    for level in range(LEVELS):
        if cell_size(level) * 2 >= dlat:
            return level
    return LEVELS - 1


def covering(lat, lng, radius_m):
    """Cell keys (one level) whose union holds every point within ``radius_m`` of ``(lat, lng)``."""
    level = level_for(radius_m, lat)
    size = cell_size(level)
    dlat, dlng = degrees_around(lat, radius_m)
    i0, i1 = math.floor((lat - dlat) / size), math.floor((lat + dlat) / size)
    j0, j1 = math.floor((lng - dlng) / size), math.floor((lng + dlng) / size)
    return ["%d:%d:%d" % (level, i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]


# ---- prefectures and counties ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def seats():
    """``[(county code, prefecture code, lat, lng)]`` of the 183 county seats."""
    with open(DATA, encoding="utf-8") as f:
        return [(r["code"], r["prefecture_code"], float(r["lat"]), float(r["lng"])) for r in csv.DictReader(f)]


def seat_of(county_code):
    for s in seats():
        if s[0] == county_code:
            return s
    return None


def nearest_seats(lat, lng):
    """Seats by distance: ``[(metres, county code, prefecture code)]``."""
    return sorted((haversine_m(lat, lng, s_lat, s_lng), code, pref) for code, pref, s_lat, s_lng in seats())


def prefecture_matches(prefecture_code, lat, lng):
    """Whether ``(lat, lng)`` may lie in ``prefecture_code`` (see the module's approximation)."""
    ranked = nearest_seats(lat, lng)
    nearest = ranked[0][0]
    own = min((d for d, _, pref in ranked if pref == prefecture_code), default=None)
    return own is not None and own <= max(PREFECTURE_SLACK_RATIO * nearest, nearest + PREFECTURE_SLACK_M)


def nearest_prefecture(lat, lng):
    return nearest_seats(lat, lng)[0][2]


@functools.lru_cache(maxsize=256)
def placement_radius_m(county_code):
    code, _, lat, lng = seat_of(county_code)
    other = min(haversine_m(lat, lng, s_lat, s_lng) for c, _, s_lat, s_lng in seats() if c != code)
    return min(PLACE_FRACTION * other, PLACE_MAX_M)


def offset(lat, lng, north_m, east_m):
    """The point ``north_m`` north and ``east_m`` east of ``(lat, lng)`` (small offsets)."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlng = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lng + dlng


def place_in_county(rng, county_code):
    """A random point inside the county (its seat's Voronoi cell), clustered around the seat like towns are."""
    _, _, lat, lng = seat_of(county_code)
    radius = placement_radius_m(county_code)
    while True:
        north, east = rng.gauss(0, radius / 3), rng.gauss(0, radius / 3)
        if county_code in EAST_ONLY:
            east = abs(east)
        if north * north + east * east <= radius * radius:
            return offset(lat, lng, north, east)

"""Stations routes of API.md: outdoor-worker service stations, nearest-first search, check-ins, visit statistics.

Beyond API.md: ``status`` on the search (``open`` by default, ``closed``, ``any``) and the answer of a check-in also
carries the station's ``code``; station answers carry ``region_name`` and ``open_now`` everywhere.
"""
from services.stations import schemas

from ..framework import json_response, route

TAGS = ["Stations"]
ADMIN = ["union_admin"]


@route("POST", "/api/v1/stations", roles=ADMIN, body=schemas.StationCreate, status=201, idempotent=True, tags=TAGS,
       summary="Open a station in your scope; the answer carries the short code for its poster",
       errors=("403 OUT_OF_SCOPE", "422 IDEMPOTENCY_KEY_REUSED"))
def create_station(gw, call):
    return gw.stations.create_station(call.actor, call.body, call.idempotency_key)


@route("PATCH", "/api/v1/stations/<station_id>", roles=ADMIN, body=schemas.StationPatch, tags=TAGS,
       summary="Change a station in your scope (any field, and status open/closed)",
       errors=("403 OUT_OF_SCOPE", "404 NOT_FOUND"))
def update_station(gw, call):
    return gw.stations.update_station(call.actor, call.path_params["station_id"], call.body)


@route("GET", "/api/v1/stations", query=schemas.StationSearch, tags=TAGS,
       summary="Stations nearest first from near=<lat>,<lng> (haversine metres, radius_m default 3000, max 50000), "
               "filtered by amenity (all), kind, open_now (Asia/Shanghai), region prefix; without near, by code",
       errors=("400 VALIDATION_ERROR",))
def search_stations(gw, call):
    return gw.stations.search_stations(call.query)


@route("GET", "/api/v1/stations/<station_id>", tags=TAGS, summary="One station with visits_this_month",
       errors=("404 NOT_FOUND",))
def get_station(gw, call):
    return gw.stations.get_station(call.path_params["station_id"])


@route("POST", "/api/v1/stations/<code>/visits", roles=["member"], status=201, tags=TAGS,
       summary="Check in by the poster's code: 201 a new visit; 200 with your visit here less than 30 minutes ago",
       errors=("404 NOT_FOUND", "409 CLOSED"))
def check_in(gw, call):
    answer = gw.stations.check_in(call.actor, call.path_params["code"])
    return json_response(answer["visit"], 201 if answer["created"] else 200, call.request_id)


@route("GET", "/api/v1/admin/stats/stations", roles=ADMIN, query=schemas.StatsQuery, tags=TAGS,
       summary="Per prefecture or county in your scope, in a month: stations open (now), visits, distinct visitors "
               "(from counters)")
def stats(gw, call):
    return gw.stations.stats(call.actor, call.query)

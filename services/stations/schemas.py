"""Marshmallow schemas of stations: the gateway validates HTTP bodies and queries with them, the service validates its
RPC payloads with the very same classes. A contract module: it knows the vocabularies and the formats, and imports
no domain rule (the gateway loads it). Whether a location lies in its region's prefecture needs the county seats and
is checked by the service (``geo.prefecture_matches``)."""
import math
import re

from marshmallow import ValidationError, fields, validate, validates, validates_schema

from unionhub_kit.schema import Page, RegionCode, RegionPrefix, StrictSchema, Text

KINDS = ("outdoor", "driver_home", "courier_home", "worker_home")
AMENITIES = ("water", "hot_water", "microwave", "restroom", "rest_area", "charging", "first_aid", "aed", "wifi",
             "repair_tools")
STATUSES = ("open", "closed")
GROUPS = ("prefecture", "county")
# Sichuan's bounding box (its extreme points): 26.05-34.32 N, 97.35-108.55 E (= geo.SICHUAN_BOX)
LAT_MIN, LAT_MAX, LNG_MIN, LNG_MAX = 26.05, 34.32, 97.35, 108.55
DEFAULT_RADIUS_M = 3000
MAX_RADIUS_M = 50000
# the poster code: 6 characters from 31 that cannot be misread (no 0/O, 1/I/L), 31^6 = 887 million codes
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 6
CODE_RE = re.compile(r"^[%s]{%d}$" % (CODE_ALPHABET, CODE_LENGTH))
HHMM_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
MONTH_RE = re.compile(r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])$")
PHONE_RE = re.compile(r"^[0-9+][0-9\- ]{4,19}$")


def where_wrong(lat, lng):
    """Why ``(lat, lng)`` is not a point in Sichuan, or None."""
    if not (LAT_MIN <= lat <= LAT_MAX and LNG_MIN <= lng <= LNG_MAX):
        if LAT_MIN <= lng <= LAT_MAX and LNG_MIN <= lat <= LNG_MAX:
            return "is outside Sichuan; latitude and longitude look swapped (lat is about 26-34, lng 97-108)."
        return "is outside Sichuan's bounding box (lat %.2f-%.2f, lng %.2f-%.2f)." % (LAT_MIN, LAT_MAX, LNG_MIN,
                                                                                    LNG_MAX)
    return None


class Coordinate(fields.Float):
    """A JSON number (not a string, not a boolean), finite."""

    def _deserialize(self, value, attr, data, **kw):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        v = super()._deserialize(value, attr, data, **kw)
        if not math.isfinite(v):
            raise self.make_error("special")
        return v


class Location(StrictSchema):
    lat = Coordinate(required=True, metadata={"description": "Latitude, decimal degrees (WGS-84), 26.05-34.32."})
    lng = Coordinate(required=True, metadata={"description": "Longitude, decimal degrees (WGS-84), 97.35-108.55."})

    @validates_schema
    def in_sichuan(self, data, **kw):
        if "lat" in data and "lng" in data:
            wrong = where_wrong(data["lat"], data["lng"])
            if wrong:
                raise ValidationError(wrong, "_schema")


class HHMM(fields.String):
    default_error_messages = {"hhmm": "must be a time of day HH:MM (00:00-23:59)."}

    def __init__(self, allow_24=False, **kw):
        self.allow_24 = allow_24
        super().__init__(**kw)

    def _deserialize(self, value, attr, data, **kw):
        v = super()._deserialize(value, attr, data, **kw)
        if not (HHMM_RE.match(v) or (self.allow_24 and v == "24:00")):
            raise self.make_error("hhmm")
        return v


class Day(fields.Integer):
    default_error_messages = {"day": "must be a day of the week 1-7 (1 = Monday)."}

    def _deserialize(self, value, attr, data, **kw):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
            raise self.make_error("day")
        return value


class OpeningHours(StrictSchema):
    """Open from ``open`` to ``close`` (Asia/Shanghai time) on each of ``days``; a ``close`` earlier than ``open``
    runs past midnight into the next day (22:00-06:00); ``00:00``-``24:00`` is the whole day."""
    days = fields.List(Day(), required=True, validate=validate.Length(min=1, max=7))
    open = HHMM(required=True)
    close = HHMM(allow_24=True, required=True)

    @validates("days")
    def distinct(self, value, **kw):
        if len(set(value)) != len(value):
            raise ValidationError("must not repeat a day.")

    @validates_schema
    def not_empty(self, data, **kw):
        if data.get("open") and data.get("open") == data.get("close"):
            raise ValidationError("must differ from open (00:00-24:00 is the whole day).", "close")


def Amenities(**kw):
    return fields.List(fields.String(validate=validate.OneOf(AMENITIES)), **kw)


def _distinct_amenities(value):
    if len(set(value)) != len(value):
        raise ValidationError("must not repeat an amenity.")


def _station_fields(required):
    """The fields of a station: all required to create one (but ``amenities`` and ``contact_phone``), none to patch."""
    return {
        "name": Text(100, min_len=2, required=required),
        "kind": fields.String(required=required, validate=validate.OneOf(KINDS)),
        "region_code": RegionCode(required=required, metadata={
            "description": "Six-digit code of the station's county (or prefecture)."}),
        "address": Text(200, min_len=2, required=required),
        "location": fields.Nested(Location, required=required),
        "opening_hours": fields.List(fields.Nested(OpeningHours), required=required,
                                     validate=validate.Length(min=1, max=14)),
        "amenities": Amenities(validate=[validate.Length(max=len(AMENITIES)), _distinct_amenities],
                               **({"load_default": list} if required else {})),
        "contact_phone": fields.String(allow_none=True, validate=validate.Regexp(
            PHONE_RE, error="must be a phone number: digits, spaces, dashes, 5-20 characters.")),
    }


StationCreate = type("StationCreate", (StrictSchema,), _station_fields(True))
_StationChange = type("StationChange", (StrictSchema,), _station_fields(False))


class StationPatch(_StationChange):
    status = fields.String(validate=validate.OneOf(STATUSES))

    @validates_schema
    def something(self, data, **kw):
        if not data:
            raise ValidationError("Change at least one field.")


def parse_near(value):
    """``(lat, lng)`` of a ``<lat>,<lng>`` string, or None when it is not two finite numbers."""
    parts = str(value).split(",")
    try:
        lat, lng = (float(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        return None
    return (lat, lng) if lat is not None and math.isfinite(lat) and math.isfinite(lng) else None


class Near(fields.String):
    """``<lat>,<lng>`` in decimal degrees, inside Sichuan (loaded as the same string: the service loads the
    gateway's result again; ``parse_near`` reads it)."""
    default_error_messages = {"near": "must be <lat>,<lng> in decimal degrees (for example 30.6598,104.0633)."}

    def _deserialize(self, value, attr, data, **kw):
        v = super()._deserialize(value, attr, data, **kw)
        point = parse_near(v)
        if point is None:
            raise self.make_error("near")
        wrong = where_wrong(*point)
        if wrong:
            raise ValidationError(wrong)
        return v


class StationSearch(Page):
    near = Near(metadata={"description": "Nearest first from here (`lat,lng`); without it, ordered by code."})
    radius_m = fields.Integer(strict=False, validate=validate.Range(
        min=1, max=MAX_RADIUS_M, error="must be 1-%d metres." % MAX_RADIUS_M),
        metadata={"description": "With near: at most this far (default %d)." % DEFAULT_RADIUS_M})
    amenity = Amenities(validate=validate.Length(max=len(AMENITIES)),
                        metadata={"description": "Repeat for several: every one must be present."})
    kind = fields.String(validate=validate.OneOf(KINDS))
    open_now = fields.Boolean(metadata={"description": "true: only stations open now (Asia/Shanghai time)."})
    region_code = RegionPrefix(metadata={"description": "Region prefix: 51, 5101 (all of Chengdu), 510104."})
    status = fields.String(load_default="open", validate=validate.OneOf(STATUSES + ("any",)),
                           metadata={"description": "open (default), closed or any."})

    @validates_schema
    def radius_needs_near(self, data, **kw):
        if "radius_m" in data and "near" not in data:
            raise ValidationError("needs near.", "radius_m")


class StatsQuery(StrictSchema):
    group_by = fields.String(load_default="prefecture", validate=validate.OneOf(GROUPS))
    month = fields.String(validate=validate.Regexp(MONTH_RE, error="must be YYYY-MM."), metadata={
        "description": "A month of Asia/Shanghai time (default: this month)."})

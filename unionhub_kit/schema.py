"""Marshmallow base schema and helpers shared by the gateway (HTTP bodies) and services (RPC arguments, events)."""
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema  # noqa: F401

from . import ids, regions
from .errors import validation_error

OCCUPATION_GROUPS = ("truck_driver", "courier", "care_worker", "domestic_worker", "mall_staff", "delivery_rider",
                     "estate_agent", "security_guard", "ride_hailing_driver", "other")


class StrictSchema(Schema):
    """Unknown fields are errors; every field is validated."""

    class Meta:
        unknown = RAISE


class Phone(fields.String):
    default_error_messages = {"phone": "must be a mainland mobile number (11 digits starting with 1)."}

    def _deserialize(self, value, attr, data, **kw):
        v = super()._deserialize(value, attr, data, **kw)
        if not ids.is_mainland_mobile(v):
            raise self.make_error("phone")
        return v


class Uscc(fields.String):
    default_error_messages = {"uscc": "is not a valid unified social credit code (GB 32100 check failed)."}

    def _deserialize(self, value, attr, data, **kw):
        v = super()._deserialize(value, attr, data, **kw).strip().upper()
        if not ids.is_valid_uscc(v):
            raise self.make_error("uscc")
        return v


class RegionCode(fields.String):
    """A six-digit GB/T 2260 code from the seeded list."""
    default_error_messages = {"region": "is not a known region code."}

    def _deserialize(self, value, attr, data, **kw):
        v = super()._deserialize(value, attr, data, **kw)
        if not regions.is_known_code(v):
            raise self.make_error("region")
        return v


class RegionPrefix(fields.String):
    """A region prefix (``51``, ``5101``, ``510104`` or ``510100``), normalised to its short form."""
    default_error_messages = {"region": "is not a known region code or prefix."}

    def _deserialize(self, value, attr, data, **kw):
        v = super()._deserialize(value, attr, data, **kw)
        if not regions.is_known_prefix(v):
            raise self.make_error("region")
        return regions.normalize_prefix(v)


class StrictInteger(fields.Integer):
    """Integers only: ``1.5``, ``"3"`` and ``true`` are rejected (money is integer fen)."""

    def __init__(self, **kw):
        kw.setdefault("strict", True)
        super().__init__(**kw)

    def _deserialize(self, value, attr, data, **kw):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kw)


class StrictBoolean(fields.Boolean):
    """Only JSON ``true`` / ``false``."""

    def _deserialize(self, value, attr, data, **kw):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def OccupationGroup(**kw):
    return fields.String(validate=validate.OneOf(OCCUPATION_GROUPS), **kw)


def Id(**kw):
    """An opaque id: 1-64 url-safe characters."""
    return fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_\-]{1,64}$"), **kw)


KEY_PATTERN = r"^[A-Za-z0-9_\-\.:]{1,128}$"  # an Idempotency-Key or a request id: 1-128 of letters, digits, _-.:


def Key(**kw):
    """An Idempotency-Key or a request id (``KEY_PATTERN``; the gateway checks the headers against the same)."""
    return fields.String(validate=validate.Regexp(KEY_PATTERN), **kw)


def Text(max_len, min_len=1, **kw):
    return fields.String(validate=validate.Length(min=min_len, max=max_len), **kw)


class Page(StrictSchema):
    """The list conventions (API.md): ``limit`` (1-100, default 20) and an opaque ``cursor`` from a previous page;
    every list's query (at the gateway) and RPC arguments (in the service) extend it."""
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=512))


def load(schema, data, partial=None):
    """Validate ``data`` with ``schema`` (instance or class) or raise ``ValidationFailed`` (400)."""
    if isinstance(schema, type):
        schema = schema()
    if not isinstance(data, dict):
        raise validation_error({"_schema": ["must be a JSON object."]})
    try:
        return schema.load(data, partial=partial)
    except ValidationError as exc:
        raise validation_error(exc.messages)

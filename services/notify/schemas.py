"""Notify's request schemas: the gateway validates HTTP bodies and queries with them, the service its RPC payloads."""
import urllib.parse

from marshmallow import fields, validate, validates_schema

from unionhub_kit import catalog
from unionhub_kit.schema import (Id, OccupationGroup, Page, Phone, RegionPrefix, StrictBoolean, StrictSchema, Text,
                                 ValidationError)

CATEGORIES = ("account", "membership", "benefits", "jobs", "announcements")  # what a member can mute
MAX_LIST = 200

def event_type_names():
    """Webhook event types: ``<service>.<event>``, the channel names of ``/asyncapi.json``."""
    return sorted("%s.%s" % key for key in catalog.EVENTS)


def normalize_event_types(values):
    """Map each given type to ``<service>.<event>``; the bare event name is accepted where it is unambiguous.

    Returns ``(types, errors)``; ``errors`` lists the unknown ones.
    """
    known = set(event_type_names())
    by_name = {}
    for service, event in catalog.EVENTS:
        by_name.setdefault(event, []).append("%s.%s" % (service, event))
    out, unknown = [], []
    for v in values:
        if v in known:
            name = v
        elif len(by_name.get(v, ())) == 1:
            name = by_name[v][0]
        else:
            unknown.append(v)
            continue
        if name not in out:
            out.append(name)
    return out, unknown


def url_problem(url):
    """Why a webhook URL is not acceptable (shape only: scheme, host, no credentials), or None."""
    try:
        u = urllib.parse.urlsplit(url)
        port = u.port
    except ValueError:
        return "is not a valid URL."
    if u.scheme not in ("http", "https"):
        return "must be an http or https URL."
    if u.username is not None or u.password is not None or "@" in u.netloc:
        return "must not carry credentials."
    if not u.hostname:
        return "must name a host."
    if port == 0:
        return "must name a valid port."
    if u.fragment:
        return "must not carry a fragment."
    return None


HHMM = validate.Regexp(r"^([01]\d|2[0-3]):[0-5]\d$", error="must be a time of day as HH:MM (00:00-23:59).")


# ---- SMS (internal RPC) ---------------------------------------------------------------------------------------
class OtpParams(StrictSchema):
    code = fields.String(required=True, validate=validate.Regexp(r"^\d{4,8}$", error="must be 4-8 digits."))


class SendSms(StrictSchema):
    """``send_sms``: an SMS from a template; used by membership for the login code."""
    to = Phone(required=True)
    template = fields.String(required=True, validate=validate.OneOf(("otp",)))
    params = fields.Dict(required=True)

    @validates_schema
    def _params(self, data, **kw):
        if data.get("template") == "otp":
            errors = OtpParams().validate(data.get("params") or {})
            if errors:
                raise ValidationError({"params": errors})


# ---- inbox ----------------------------------------------------------------------------------------------------
class NotificationsQuery(Page):
    unread = fields.Boolean(load_default=None)


class QuietHours(StrictSchema):
    start = fields.String(required=True, validate=HHMM)
    end = fields.String(required=True, validate=HHMM)

    @validates_schema
    def _window(self, data, **kw):
        if data.get("start") is not None and data.get("start") == data.get("end"):
            raise ValidationError({"end": ["must differ from start."]})


class Preferences(StrictSchema):
    """PUT body: the fields given replace the stored ones; ``quiet_hours: null`` turns quiet hours off."""
    sms = StrictBoolean()
    push = StrictBoolean()
    muted_categories = fields.List(fields.String(validate=validate.OneOf(CATEGORIES)),
                                   validate=validate.Length(max=len(CATEGORIES)))
    quiet_hours = fields.Nested(QuietHours, allow_none=True)
    language = fields.String(validate=validate.OneOf(("zh", "en")))


class Device(StrictSchema):
    platform = fields.String(required=True, validate=validate.OneOf(("android", "ios")))
    token = fields.String(required=True, validate=[validate.Length(min=1, max=512),
                                                   validate.Regexp(r"^\S+$", error="must not contain spaces.")])


# ---- announcements --------------------------------------------------------------------------------------------
class Audience(StrictSchema):
    """Dimensions combine with AND; an empty or missing list does not restrict; at least one must be named."""
    region_codes = fields.List(RegionPrefix(), load_default=list, validate=validate.Length(max=MAX_LIST))
    occupation_groups = fields.List(OccupationGroup(), load_default=list, validate=validate.Length(max=MAX_LIST))
    union_ids = fields.List(Id(), load_default=list, validate=validate.Length(max=MAX_LIST))

    @validates_schema
    def _some(self, data, **kw):
        if not (data.get("region_codes") or data.get("occupation_groups") or data.get("union_ids")):
            raise ValidationError(["name at least one of region_codes, occupation_groups, union_ids "
                                   "(to reach everyone in your scope, name your scope's region)."])


class Announcement(StrictSchema):
    title = Text(100, required=True)
    body = Text(4000, required=True)
    audience = fields.Nested(Audience, required=True)


# ---- webhooks -------------------------------------------------------------------------------------------------
class WebhookUrl(fields.String):
    """http(s), a host, no credentials (name resolution is checked by the service)."""

    def _deserialize(self, value, attr, data, **kw):
        v = super()._deserialize(value, attr, data, **kw).strip()
        problem = url_problem(v)
        if problem:
            raise ValidationError(problem)
        return v


class EventTypes(fields.List):
    """``<service>.<event>`` names from ``/asyncapi.json`` (bare event names are accepted and qualified)."""

    def _deserialize(self, value, attr, data, **kw):
        values = super()._deserialize(value, attr, data, **kw)
        types, unknown = normalize_event_types(values)
        if unknown:
            raise ValidationError("unknown event type(s): %s; known: %s." % (
                ", ".join(unknown), ", ".join(event_type_names())))
        return types


class Webhook(StrictSchema):
    url = WebhookUrl(required=True, validate=validate.Length(min=1, max=2048))
    event_types = EventTypes(fields.String(validate=validate.Length(min=1, max=100)), required=True,
                             validate=validate.Length(min=1, max=MAX_LIST))
    secret = Text(256, min_len=8, required=True)


class DeliveriesQuery(Page):
    status = fields.String(load_default=None, validate=validate.OneOf(("pending", "delivered", "failed")))


class WebhooksQuery(Page):
    pass

"""The CloudEvents 1.0 structured-JSON envelope every UnionHub event travels in."""
import datetime
import uuid

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from . import catalog, clock


def rfc3339(dt):
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value):
    dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc)


class Envelope(Schema):
    class Meta:
        unknown = RAISE

    specversion = fields.String(required=True, validate=validate.Equal("1.0"))
    id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    source = fields.String(required=True, validate=validate.Regexp(r"^/unionhub/[a-z]+$"))
    type = fields.String(required=True, validate=validate.Regexp(r"^org\.unionhub\.[a-z]+\.[a-z_]+\.v\d+$"))
    time = fields.String(required=True)
    subject = fields.String(allow_none=True, load_default=None)
    datacontenttype = fields.String(required=True, validate=validate.Equal("application/json"))
    data = fields.Dict(required=True)
    # extension attribute carrying the HTTP request id across hops
    requestid = fields.String(allow_none=True, load_default=None)


_ENVELOPE = Envelope()
_DATA = {}  # (service, event) -> an instance of its catalogue schema: a marshmallow schema is built (its fields deep
#             copied) at every instantiation, which was most of the CPU of building or parsing an event; an instance
#             keeps no state between loads (no schema here uses ``context``), so one is shared


def data_schema(service, event):
    schema = _DATA.get((service, event))
    if schema is None:
        schema = _DATA[(service, event)] = catalog.schema_for(service, event)()
    return schema


def build(service, event, data, subject=None, request_id=None, event_id=None, time=None):
    """Validate ``data`` against the catalogue and wrap it in an envelope (a plain dict)."""
    schema = data_schema(service, event)
    errors = schema.validate(data)
    if errors:
        raise ValueError("event %s.%s data invalid: %s" % (service, event, errors))
    leaked = _forbidden(data)
    if leaked:
        raise ValueError("event %s.%s data carries personal data or a secret: %s" % (service, event, leaked))
    env = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": "/unionhub/%s" % service,
        "type": catalog.event_type(service, event),
        "time": rfc3339(time or clock.now()),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    }
    if request_id:
        env["requestid"] = request_id
    return env


def _forbidden(data):
    """The names of ``catalog.FORBIDDEN_FIELDS`` found anywhere in ``data``."""
    found, todo = set(), [data]
    while todo:
        value = todo.pop()
        if isinstance(value, dict):
            found |= set(value) & catalog.FORBIDDEN_FIELDS
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return sorted(found)


def parse(body, accepted):
    """Validate a received envelope and its data, for a handler of the ``(service, event)`` pairs ``accepted``;
    raise ``ValidationError`` (or ``ValueError`` / ``KeyError`` for a malformed type) for a poison message."""
    env = _ENVELOPE.load(body if isinstance(body, dict) else {})
    key = name_of(env)
    if key not in accepted:
        raise ValidationError({"type": ["%s is not handled here" % env["type"]]})
    env["data"] = data_schema(*key).load(env["data"])
    return env


def name_of(env):
    """(service, event) from an envelope's ``type``."""
    _, _, service, event, _ = env["type"].split(".")
    return service, event

"""Notify's rules, free of broker and store: flows and channels, preferences and quiet hours, backoff, audiences,
webhook targets, ids and cursors, and the JSON views of what notify keeps.
"""
import datetime
import ipaddress
import random
import re
import secrets
import socket
import urllib.parse
from collections import namedtuple

from unionhub_kit import clock, paging, regions
from unionhub_kit.actors import require_role  # noqa: F401
from unionhub_kit.errors import Forbidden, NotFound
from unionhub_kit.events import rfc3339

from .schemas import (  # noqa: F401  (the contract's values, validated at the gateway too)
    event_type_names, normalize_event_types, url_problem)

UTC = datetime.timezone.utc
CST = datetime.timezone(datetime.timedelta(hours=8), "CST")  # quiet hours are China Standard Time (no DST)
NO_LEASE = datetime.datetime(1970, 1, 1, tzinfo=UTC)  # lease_until of an item nobody holds

# ---- flows ----------------------------------------------------------------------------------------------------
Flow = namedtuple("Flow", "category channels event")

# template name -> its category, channels (inbox always first when present) and originating catalogue event
FLOWS = {
    "otp": Flow("account", ("sms",), None),
    "member_joined": Flow("membership", ("inbox", "sms", "push"), ("membership", "member_joined")),
    "member_rejected": Flow("membership", ("inbox", "push"), ("membership", "member_rejected")),
    "member_transferred": Flow("membership", ("inbox", "push"), ("membership", "member_transferred")),
    "coupon_claimed": Flow("benefits", ("inbox", "push"), ("benefits", "coupon_claimed")),
    "coupon_redeemed": Flow("benefits", ("inbox", "push"), ("benefits", "coupon_redeemed")),
    "application_status_changed": Flow("jobs", ("inbox", "push"), ("jobs", "application_status_changed")),
    "job_alert_matched": Flow("jobs", ("inbox", "push"), ("jobs", "job_alert_matched")),
    "announcement": Flow("announcements", ("inbox", "push"), None),
}
SMS_TEMPLATES = tuple(sorted(name for name, f in FLOWS.items() if "sms" in f.channels))
PROVIDER_CHANNELS = ("sms", "push")


# ---- preferences and quiet hours ------------------------------------------------------------------------------
DEFAULT_PREFS = {"sms": True, "push": True, "muted_categories": [], "quiet_hours": None, "language": "zh"}


def prefs_view(doc):
    """A member's preferences with the defaults filled in."""
    out = dict(DEFAULT_PREFS)
    for key in DEFAULT_PREFS:
        if doc and doc.get(key) is not None:
            out[key] = doc[key]
    out["muted_categories"] = list(out["muted_categories"])
    return out


def provider_channels(template, prefs):
    """The SMS / push channels a notification goes out on, given the member's preferences.

    Muting a category silences its SMS and push; the inbox keeps the entry (it is the record of what happened).
    """
    flow = FLOWS[template]
    if flow.category in prefs["muted_categories"]:
        return []
    return [c for c in flow.channels if c in PROVIDER_CHANNELS and prefs.get(c, True)]


def _minutes(hhmm):
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def quiet_until(now, quiet_hours):
    """If ``now`` (aware UTC) falls in the quiet hours (``{"start", "end"}`` "HH:MM" China time, the window may
    cross midnight; start inclusive, end exclusive), the UTC time they end; otherwise None."""
    if not quiet_hours:
        return None
    start, end = _minutes(quiet_hours["start"]), _minutes(quiet_hours["end"])
    local = now.astimezone(CST)
    cur = local.hour * 60 + local.minute
    inside = (start <= cur < end) if start < end else (cur >= start or cur < end)
    if not inside:
        return None
    ends = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
    if ends <= local:
        ends += datetime.timedelta(days=1)
    return ends.astimezone(UTC)


# ---- retries --------------------------------------------------------------------------------------------------
def backoff_seconds(attempt, base, cap, rng=random):
    """Exponential backoff with jitter: ``base * 2^(attempt-1)``, capped, times U(0.5, 1.5)."""
    return min(cap, base * (2 ** max(0, attempt - 1))) * rng.uniform(0.5, 1.5)


# ---- ids and cursors ------------------------------------------------------------------------------------------
def new_id(now=None):
    """A 24-character id whose order is creation order (milliseconds, then 48 random bits)."""
    now = now or clock.now()
    return "%012x%s" % (int(now.timestamp() * 1000), secrets.token_hex(6))


ID_RE = re.compile(r"^[0-9a-f]{24}$")


def encode_cursor(last_id):
    return paging.encode_cursor("n1:" + last_id)


def decode_cursor(cursor):
    """The id a cursor points after; a malformed cursor is a 400."""
    key = paging.decode_cursor(cursor, r"n1:[0-9a-f]{24}")
    return key[3:] if key else None


def page(docs, limit, view):
    """``{"items", "next_cursor"}`` from ``limit + 1`` documents fetched in list order."""
    more = len(docs) > limit
    docs = docs[:limit]
    return {"items": [view(d) for d in docs], "next_cursor": encode_cursor(docs[-1]["_id"]) if more else None}


# ---- inbox and provider messages ------------------------------------------------------------------------------
def notification_doc(user_id, template, rendered, dedupe, now, announcement_id=None):
    doc = {"_id": new_id(now), "user_id": user_id, "category": FLOWS[template].category, "template": template,
           "title": rendered["title"], "body": rendered["body"], "read": False, "created_at": now,
           "dedupe": dedupe}
    if announcement_id:
        doc["announcement_id"] = announcement_id
    return doc


def dispatch_doc(user_id, notification_id, template, channel, rendered, to_enc, to_masked, dedupe, now, due_at,
                 platform=None):
    """An SMS or push message waiting for its provider (held until ``due_at`` during quiet hours)."""
    doc = {"_id": new_id(now), "dedupe": dedupe, "notification_id": notification_id, "user_id": user_id,
           "channel": channel, "template": template, "category": FLOWS[template].category,
           "params": rendered["params"], "to_enc": to_enc, "to_masked": to_masked, "status": "pending",
           "attempts": 0, "due_at": due_at, "held": due_at > now, "created_at": now, "lease_until": NO_LEASE}
    if channel == "sms":
        doc["text"] = rendered["text"]
    else:
        doc.update(title=rendered["title"], body=rendered["body"], platform=platform)
    return doc


def provider_message(doc, to):
    """The JSON a provider receives (API.md: ``{to, template, params, text}`` for SMS; for a push multicast ``to`` is
    the list of device tokens, up to ``PUSH_MULTICAST_MAX``)."""
    if doc["channel"] == "sms":
        return {"to": to, "template": doc["template"], "params": doc["params"], "text": doc["text"]}
    return {"to": to, "platform": doc.get("platform"), "template": doc["template"], "params": doc["params"],
            "title": doc["title"], "body": doc["body"]}


def outcome_data(doc, error=None):
    """``notification_delivered`` / ``notification_failed`` data (no phone, no code)."""
    data = {"notification_id": doc.get("notification_id") or doc["_id"], "user_id": doc.get("user_id"),
            "channel": doc["channel"], "category": doc["category"], "template": doc["template"],
            "attempts": doc["attempts"]}
    if error is not None:
        data["error"] = error[:500]
    return data


def notification_view(doc):
    return {"id": doc["_id"], "category": doc["category"], "title": doc["title"], "body": doc["body"],
            "created_at": rfc3339(doc["created_at"]), "read": bool(doc.get("read"))}


def device_view(doc):
    token = doc["token"]
    return {"id": doc["_id"], "platform": doc["platform"],
            "token_masked": token[:4] + "…" + token[-4:] if len(token) > 12 else "…",
            "created_at": rfc3339(doc["created_at"])}


# ---- actors ---------------------------------------------------------------------------------------------------


# ---- announcements --------------------------------------------------------------------------------------------
def check_audience_scope(audience, scope, union_codes):
    """Every region prefix and every known union of the audience must lie in the admin's scope (else 403).

    ``union_codes`` maps the audience's union ids to their codes as far as the projection knows them; a union notify
    has not seen yet has no members to reach, and the fan-out is limited to the scope anyway.
    """
    outside = [p for p in audience["region_codes"] if not regions.in_scope(p, scope)]
    outside += [uid for uid, code in union_codes.items() if code and not regions.in_scope(code, scope)]
    if outside:
        raise Forbidden("The audience reaches outside your scope (%s): %s." % (scope, ", ".join(outside)),
                        code="OUT_OF_SCOPE")


def region_codes_under(prefix):
    """The six-digit codes (province, prefectures, counties) that a region prefix covers."""
    p = regions.normalize_prefix(prefix)
    return sorted(c for c in regions.all_codes() if c.startswith(p))


def audience_filter(audience, scope):
    """The projection query for the active members of an audience inside ``scope`` (dimensions AND together).

    Region prefixes become the list of six-digit codes they cover (members carry their union's six-digit region
    code), so the store answers them from the ``region_code`` index; the province prefix needs no condition.
    """
    f = {"status": "active", "union_code": {"$regex": "^" + re.escape(regions.normalize_prefix(scope))}}
    prefixes = [regions.normalize_prefix(p) for p in audience.get("region_codes") or ()]
    if prefixes and not any(len(p) == 2 for p in prefixes):
        f["region_code"] = {"$in": sorted({c for p in prefixes for c in region_codes_under(p)})}
    if audience.get("occupation_groups"):
        f["occupation_group"] = {"$in": list(audience["occupation_groups"])}
    if audience.get("union_ids"):
        f["union_id"] = {"$in": list(audience["union_ids"])}
    return f


def announcement_keys(audience):
    """The keys an announcement is found by from a member's inbox: those of its most selective dimension (its unions,
    else its region prefixes, else its occupation groups). A member's inbox asks for its own keys
    (``member_keys``); the other dimensions and the scope are checked on what comes back (``reaches``)."""
    if audience.get("union_ids"):
        return sorted({"u:" + u for u in audience["union_ids"]})
    if audience.get("region_codes"):
        return sorted({"r:" + regions.normalize_prefix(p) for p in audience["region_codes"]})
    return sorted({"g:" + g for g in audience.get("occupation_groups") or ()})


def member_keys(member):
    """The keys of the announcements that may reach ``member`` (a projection document)."""
    region = member.get("region_code") or ""
    prefixes = {regions.normalize_prefix(region[:n].ljust(6, "0")) for n in (2, 4, 6) if len(region) >= n}
    keys = ["r:" + p for p in sorted(prefixes)]
    if member.get("union_id"):
        keys.append("u:" + member["union_id"])
    if member.get("occupation_group"):
        keys.append("g:" + member["occupation_group"])
    return keys


def reaches(doc, member):
    """Whether the announcement ``doc`` is for ``member``: an active member, inside the sender's scope, in every
    dimension the audience names, and active when it was sent (members see what was sent while they were members,
    as when every announcement was written into each inbox)."""
    if member is None or member.get("status") != "active":
        return False
    code, region = member.get("union_code") or "", member.get("region_code") or ""
    if not code.startswith(doc["scope"]):
        return False
    audience = doc["audience"]
    prefixes = [regions.normalize_prefix(p) for p in audience.get("region_codes") or ()]
    if prefixes and not any(region.startswith(p) for p in prefixes):
        return False
    if audience.get("occupation_groups") and member.get("occupation_group") not in audience["occupation_groups"]:
        return False
    if audience.get("union_ids") and member.get("union_id") not in audience["union_ids"]:
        return False
    since = member.get("active_since")
    return since is None or doc["created_at"] >= since


def time_of_id(_id):
    """When an id was made (its first 12 hex digits are the millisecond)."""
    return datetime.datetime.fromtimestamp(int(_id[:12], 16) / 1000, UTC)


def id_at(when):
    """The smallest id of ``when`` (ids start with their millisecond): a lower bound for ids created since."""
    return "%012x%s" % (int(when.timestamp() * 1000), "0" * 12)


def announcement_entry(doc, read):
    """An announcement as an inbox entry (the member's read state beside it)."""
    return {"_id": doc["_id"], "category": FLOWS["announcement"].category, "title": doc["title"], "body": doc["body"],
            "created_at": doc["created_at"], "read": read}


def merge_inbox(own, announcements, limit):
    """The member's own entries and the announcements that reach them, newest first, ``limit + 1`` at most (each
    list was fetched newest first, ``limit + 1`` at most, below the same cursor)."""
    return sorted(own + announcements, key=lambda d: d["_id"], reverse=True)[:limit + 1]


def announcement_doc(actor, body, now):
    """Written once: every member it reaches reads it from here (fan-out on read). ``recipients`` is counted, and
    push messages to the members' devices are sent in batches, by the fan-out worker."""
    return {"_id": new_id(now), "title": body["title"], "body": body["body"], "audience": body["audience"],
            "keys": announcement_keys(body["audience"]), "scope": regions.normalize_prefix(actor["scope"]),
            "created_by": actor["sub"], "status": "pending", "recipients": None, "delivered": 0, "scanned": 0,
            "batches": 0, "created_at": now, "started_at": None, "finished_at": None, "lease_until": NO_LEASE}


def announcement_view(doc):
    """``delivered``: the members whose inbox shows it (all of the audience counted so far: it shows in every
    inbox at once); ``pushes``: the device tokens handed to the provider's multicast so far."""
    return {"id": doc["_id"], "status": doc["status"], "recipients": doc["recipients"] or 0,
            "delivered": doc["delivered"], "title": doc["title"], "audience": doc["audience"],
            "created_at": rfc3339(doc["created_at"]), "finished_at": rfc3339(doc.get("finished_at")),
            "pushes": doc.get("pushes", 0)}


def own_announcement(doc, actor):
    """Admins see the announcements sent inside their scope."""
    if doc is None or not regions.in_scope(doc["scope"], actor.get("scope")):
        raise NotFound("No such announcement.")
    return doc


# ---- webhooks -------------------------------------------------------------------------------------------------


def _private(address):
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global)


resolve_host = socket.getaddrinfo  # how a webhook's host is resolved (tests put an offline resolver here)


def target_problem(url, allow_private, resolve=None):
    """``url_problem`` plus name resolution: a loopback, private or otherwise non-public address is refused
    unless ``allow_private`` (development)."""
    resolve = resolve or resolve_host
    problem = url_problem(url)
    if problem:
        return problem
    u = urllib.parse.urlsplit(url)
    try:
        infos = resolve(u.hostname, u.port or (443 if u.scheme == "https" else 80), proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        return "names a host that does not resolve."
    addresses = {info[4][0] for info in infos}
    if not addresses:
        return "names a host that does not resolve."
    if not allow_private and any(_private(a) for a in addresses):
        return "resolves to a loopback or private address."
    return None


def webhook_view(doc):
    return {"id": doc["_id"], "url": doc["url"], "event_types": doc["event_types"],
            "created_at": rfc3339(doc["created_at"])}


def delivery_doc(hook, envelope, now):
    service_event = "%s.%s" % tuple(envelope["type"].split(".")[2:4])
    return {"_id": new_id(now), "webhook_id": hook["_id"], "owner": hook["owner"], "event_id": envelope["id"],
            "event_type": service_event, "envelope": envelope, "status": "pending", "attempts": 0, "replays": 0,
            "due_at": now, "last_status": None, "last_error": None, "created_at": now, "last_attempt_at": None,
            "lease_until": NO_LEASE}


def delivery_view(doc):
    return {"id": doc["_id"], "webhook_id": doc["webhook_id"], "event_id": doc["event_id"],
            "event_type": doc["event_type"], "status": doc["status"], "attempts": doc["attempts"],
            "last_status": doc["last_status"], "last_error": doc["last_error"],
            "created_at": rfc3339(doc["created_at"]), "last_attempt_at": rfc3339(doc.get("last_attempt_at")),
            "next_attempt_at": rfc3339(doc["due_at"]) if doc["status"] == "pending" else None,
            "replays": doc.get("replays", 0)}

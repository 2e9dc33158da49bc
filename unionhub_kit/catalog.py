"""The event catalogue: every event type any service dispatches, with the marshmallow schema of its ``data``.

This module is the contract integrators build on. The outbox refuses to store an event whose type is not listed here
or whose data does not validate, consumers validate what they receive against the same schema, and the gateway's
``/asyncapi.json`` is generated from it. A breaking change to ``data`` is a new ``.v2`` type.
"""
from marshmallow import INCLUDE, Schema, fields, validate

from .schema import OCCUPATION_GROUPS


class EventData(Schema):
    class Meta:
        unknown = INCLUDE  # consumers tolerate additive fields (a non-breaking change)


# Personal data never goes on an event, whole or sealed (events reach other services and integrators' webhooks);
# ``events.build`` refuses data holding any of these fields at any depth. Masked forms (``phone_masked``) are fine.
FORBIDDEN_FIELDS = frozenset({"phone", "phone_sealed", "phone_enc", "id_number", "id_enc", "id_hash",
                              "password", "password_hash", "token", "access_token", "refresh_token", "secret"})


Str = fields.String
DT = fields.String  # RFC 3339 UTC string
Int = fields.Integer
Bool = fields.Boolean
NStr = lambda **kw: fields.String(allow_none=True, load_default=None, **kw)  # noqa: E731


# ---- membership -----------------------------------------------------------------------------------------------
class MemberData(EventData):
    member_id = Str(required=True)
    user_id = Str(required=True, metadata={"description": "The member's account id (the `sub` of their token)."})
    union_id = Str(required=True)
    union_code = Str(required=True, metadata={"description": "Organisation code; scope checks are prefix checks."})
    region_code = Str(required=True, metadata={"description": "Six-digit GB/T 2260 code of the union's county or prefecture."})
    occupation_group = Str(required=True, validate=validate.OneOf(OCCUPATION_GROUPS))
    status = Str(required=True)


class MemberJoined(MemberData):
    card_no = Str(required=True)
    joined_at = DT(required=True)
    phone_masked = Str(required=True, metadata={
        "description": "The masked phone (138****5678); no event carries a phone, whole or sealed: notify asks "
                       "membership for it by RPC."})
    name_masked = Str(load_default=None)


class MemberRejected(EventData):
    member_id = Str(required=True)
    user_id = Str(required=True)
    union_id = Str(required=True)
    reason = Str(required=True)


class MemberTransferred(MemberData):
    from_union_id = Str(required=True)
    from_union_code = Str(required=True)


class MemberLeft(EventData):
    member_id = Str(required=True)
    user_id = Str(required=True)
    union_id = Str(required=True)
    erased = Bool(required=True)


class UnionCreated(EventData):
    union_id = Str(required=True)
    code = Str(required=True)
    name = Str(required=True)
    level = Str(required=True)
    parent_id = NStr()
    region_code = Str(required=True)
    auto_approve = Bool(required=True)


# ---- benefits -------------------------------------------------------------------------------------------------
class Eligibility(Schema):
    region_codes = fields.List(Str(), load_default=list)
    occupation_groups = fields.List(Str(), load_default=list)
    union_ids = fields.List(Str(), load_default=list)


class CampaignPublished(EventData):
    campaign_id = Str(required=True)
    title = Str(required=True)
    merchant_id = Str(required=True)
    face_value_cents = Int(required=True)
    min_spend_cents = Int(required=True)
    quota = Int(required=True)
    per_member_limit = Int(required=True)
    claim_starts_at = DT(required=True)
    claim_ends_at = DT(required=True)
    redeem_ends_at = DT(required=True)
    eligibility = fields.Nested(Eligibility, required=True)
    welcome = Bool(required=True)


class CouponClaimed(EventData):
    coupon_id = Str(required=True)
    campaign_id = Str(required=True)
    user_id = Str(required=True)
    title = Str(required=True)
    face_value_cents = Int(required=True)
    expires_at = DT(required=True)
    welcome = Bool(load_default=False)


class CouponRedeemed(EventData):
    coupon_id = Str(required=True)
    campaign_id = Str(required=True)
    user_id = Str(required=True)
    merchant_id = Str(required=True)
    title = Str(required=True)
    face_value_cents = Int(required=True)
    redeemed_at = DT(required=True)


class CampaignSoldOut(EventData):
    campaign_id = Str(required=True)
    quota = Int(required=True)


# ---- jobs -----------------------------------------------------------------------------------------------------
class JobPosted(EventData):
    job_id = Str(required=True)
    employer_id = Str(required=True)
    employer_name = Str(required=True)
    title = Str(required=True)
    category = Str(required=True)
    region_code = Str(required=True)
    salary_min = Int(required=True)
    salary_max = Int(required=True)
    valid_until = DT(required=True)


class JobClosed(EventData):
    job_id = Str(required=True)
    employer_id = Str(required=True)
    reason = Str(required=True, validate=validate.OneOf(["closed", "expired"]))


class FairScheduled(EventData):
    fair_id = Str(required=True)
    title = Str(required=True)
    kind = Str(required=True)
    region_code = Str(required=True)
    starts_at = DT(required=True)
    ends_at = DT(required=True)


class ApplicationSubmitted(EventData):
    application_id = Str(required=True)
    job_id = Str(required=True)
    job_title = Str(required=True)
    employer_id = Str(required=True)
    user_id = Str(required=True)


class ApplicationStatusChanged(EventData):
    application_id = Str(required=True)
    job_id = Str(required=True)
    job_title = Str(required=True)
    employer_id = Str(required=True)
    user_id = Str(required=True)
    status = Str(required=True)


class JobAlertMatched(EventData):
    job_id = Str(required=True)
    title = Str(required=True)
    employer_name = Str(required=True)
    region_code = Str(required=True)
    user_ids = fields.List(Str(), required=True)


# ---- stations -------------------------------------------------------------------------------------------------
class Point(Schema):
    lat = fields.Float(required=True)
    lng = fields.Float(required=True)


class StationOpened(EventData):
    station_id = Str(required=True)
    code = Str(required=True, metadata={"description": "The short code on the station's poster (members check in with it)."})
    name = Str(required=True)
    kind = Str(required=True)
    region_code = Str(required=True)
    location = fields.Nested(Point, required=True)
    amenities = fields.List(Str(), load_default=list)


class StationClosed(EventData):
    station_id = Str(required=True)
    code = Str(required=True)
    name = Str(required=True)
    region_code = Str(required=True)


class StationVisited(EventData):
    visit_id = Str(required=True)
    station_id = Str(required=True)
    code = Str(required=True)
    region_code = Str(required=True)
    user_id = Str(required=True, metadata={"description": "The member's account id."})
    at = DT(required=True)
    month = Str(required=True, metadata={"description": "YYYY-MM of the visit in Asia/Shanghai time."})


# ---- notify ---------------------------------------------------------------------------------------------------
class NotificationOutcome(EventData):
    notification_id = Str(required=True)
    user_id = NStr()
    channel = Str(required=True)
    category = Str(required=True)
    template = Str(required=True)
    attempts = Int(required=True)


class NotificationFailed(NotificationOutcome):
    error = Str(required=True)


# (service, event name) -> (schema, summary)
EVENTS = {
    ("membership", "member_joined"): (MemberJoined, "A member became active (approved, or at once in an auto-approve union)."),
    ("membership", "member_rejected"): (MemberRejected, "A join application was rejected."),
    ("membership", "member_transferred"): (MemberTransferred, "A member moved to another union (after its approval)."),
    ("membership", "member_left"): (MemberLeft, "A member left; `erased` tells whether personal data was erased."),
    ("membership", "union_created"): (UnionCreated, "A grassroots union was created (建会)."),
    ("benefits", "campaign_published"): (CampaignPublished, "A coupon campaign was published."),
    ("benefits", "coupon_claimed"): (CouponClaimed, "A member claimed (or was issued) a coupon."),
    ("benefits", "coupon_redeemed"): (CouponRedeemed, "A merchant redeemed a coupon."),
    ("benefits", "campaign_sold_out"): (CampaignSoldOut, "The last coupon of a campaign was claimed."),
    ("jobs", "job_posted"): (JobPosted, "An employer posted a job."),
    ("jobs", "job_closed"): (JobClosed, "A posting was closed by its employer or expired."),
    ("jobs", "fair_scheduled"): (FairScheduled, "Union staff scheduled a job fair."),
    ("jobs", "application_submitted"): (ApplicationSubmitted, "A member applied to a posting."),
    ("jobs", "application_status_changed"): (ApplicationStatusChanged, "An employer moved an application on."),
    ("jobs", "job_alert_matched"): (JobAlertMatched, "A new posting matched members' job alerts (for notify)."),
    ("stations", "station_opened"): (StationOpened, "A station was opened (created, or reopened)."),
    ("stations", "station_closed"): (StationClosed, "A station was closed."),
    ("stations", "station_visited"): (StationVisited, "A member checked in at a station (at most once per 30 minutes "
                                                      "per station); notify puts nothing in inboxes for it."),
    ("notify", "notification_delivered"): (NotificationOutcome, "A provider accepted a notification."),
    ("notify", "notification_failed"): (NotificationFailed, "A notification failed after its retries."),
}


def schema_for(service, event):
    try:
        return EVENTS[(service, event)][0]
    except KeyError:
        raise KeyError("event %s.%s is not in unionhub_kit.catalog.EVENTS" % (service, event))


def event_type(service, event, version=1):
    return "org.unionhub.%s.%s.v%d" % (service, event, version)


def services():
    return sorted({s for s, _ in EVENTS})

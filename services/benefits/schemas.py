"""Marshmallow schemas of benefits: the gateway validates HTTP bodies and queries with them, the service validates its
RPC payloads with the very same classes.

Times are RFC 3339 with a zone. The gateway hands a body on as ``schema.dump(loaded)`` so it stays JSON (and the
service loads it again with the same class).
"""
import datetime

from marshmallow import ValidationError, fields, validate, validates_schema

from unionhub_kit import clock, events
from unionhub_kit.schema import (Id, Key, OccupationGroup, Page, RegionCode, RegionPrefix, StrictBoolean, StrictInteger,
                                 StrictSchema, Text, Uscc)

MAX_CENTS = 10 ** 9
MAX_QUOTA = 10 ** 7
MAX_PER_MEMBER = 100
CAMPAIGN_STATUSES = ("live", "upcoming", "ended")
COUPON_STATUSES = ("unused", "redeemed", "expired")
# coupon codes: RFC 4648 base32 letters (upper case and digits 2-7: QR alphanumeric mode, no 0/1/8/9 look-alikes);
# 20 characters from ``secrets`` = 100 bits, not guessable
CODE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
CODE_LENGTH = 20


def window_errors(starts, ends, redeem_ends, now):
    """Field -> messages for a claim window that is in the wrong order or already over."""
    errors = {}
    if starts is None or ends is None or redeem_ends is None:
        return errors
    if not starts < ends:
        errors["claim_ends_at"] = ["must be after claim_starts_at."]
    elif not ends > now:
        errors["claim_ends_at"] = ["must be in the future."]
    if ends > redeem_ends:
        errors["redeem_ends_at"] = ["must not be before claim_ends_at."]
    return errors


MAX_ELIGIBILITY = 50


class Instant(fields.AwareDateTime):
    """An RFC 3339 date-time that names its zone (``2026-05-01T10:00:00+08:00`` or ``...Z``); kept in UTC."""

    def __init__(self, **kw):
        super().__init__(format="iso", **kw)

    def _deserialize(self, value, attr, data, **kw):
        return super()._deserialize(value, attr, data, **kw).astimezone(datetime.timezone.utc)

    def _serialize(self, value, attr, obj, **kw):
        return events.rfc3339(value)


# ---- merchants ------------------------------------------------------------------------------------------------
class MerchantCreate(StrictSchema):
    name = Text(100, min_len=2, required=True)
    uscc = Uscc(required=True)
    region_code = RegionCode(required=True, metadata={"description": "Six-digit GB/T 2260 code; in the caller's scope."})


# ---- campaigns ------------------------------------------------------------------------------------------------
class Eligibility(StrictSchema):
    """Empty or missing list = no restriction on that dimension; the dimensions combine with AND."""
    region_codes = fields.List(RegionPrefix(), load_default=list, validate=validate.Length(max=MAX_ELIGIBILITY))
    occupation_groups = fields.List(OccupationGroup(), load_default=list,
                                    validate=validate.Length(max=MAX_ELIGIBILITY))
    union_ids = fields.List(Id(), load_default=list, validate=validate.Length(max=MAX_ELIGIBILITY))


class CampaignCreate(StrictSchema):
    title = Text(100, required=True)
    merchant_id = Id(required=True)
    face_value_cents = StrictInteger(required=True, validate=validate.Range(min=1, max=MAX_CENTS))
    min_spend_cents = StrictInteger(load_default=0, validate=validate.Range(min=0, max=MAX_CENTS))
    quota = StrictInteger(required=True, validate=validate.Range(min=1, max=MAX_QUOTA))
    per_member_limit = StrictInteger(required=True, validate=validate.Range(min=1, max=MAX_PER_MEMBER))
    claim_starts_at = Instant(required=True)
    claim_ends_at = Instant(required=True)
    redeem_ends_at = Instant(required=True)
    eligibility = fields.Nested(Eligibility, load_default=lambda: Eligibility().load({}))
    welcome = StrictBoolean(load_default=False, metadata={
        "description": "Issued automatically (one coupon) to new members who are eligible while it is live."})

    @validates_schema
    def windows(self, data, **kw):
        errors = window_errors(data.get("claim_starts_at"), data.get("claim_ends_at"),
                                      data.get("redeem_ends_at"), clock.now())
        if errors:
            raise ValidationError(errors)


class CampaignFilter(StrictSchema):
    status = fields.String(validate=validate.OneOf(CAMPAIGN_STATUSES), metadata={
        "description": "live: in its claim window; upcoming: not yet; ended: the claim window is over."})
    region_code = RegionPrefix(metadata={"description": "Campaigns open to members in (part of) this region."})
    merchant_id = Id()
    welcome = fields.Boolean()


MAX_CLAIM_BATCH = 64  # the most claims one ``claim_many`` call carries (the gateway's group commit batch)


class ClaimActor(StrictSchema):
    """The caller of one claim, as the gateway tells services (``gateway.auth.Principal.as_actor``)."""
    sub = fields.String(required=True, validate=validate.Length(min=1, max=128))
    role = fields.String(required=True, validate=validate.Length(min=1, max=32))
    scope = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=64))
    merchant_id = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=64))
    employer_id = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=64))
    sid = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=128))


class ClaimItem(StrictSchema):
    actor = fields.Nested(ClaimActor, required=True)
    idempotency_key = Key(allow_none=True, load_default=None)
    request_id = Key(allow_none=True, load_default=None)


class ClaimBatch(StrictSchema):
    """``claim_many``'s arguments: the claims of one campaign that reached one gateway process together."""
    campaign_id = Id(required=True)
    claims = fields.List(fields.Nested(ClaimItem), required=True,
                         validate=validate.Length(min=1, max=MAX_CLAIM_BATCH))


class CampaignListArgs(CampaignFilter, Page):
    pass


# ---- coupons and statistics -----------------------------------------------------------------------------------
class CouponFilter(StrictSchema):
    status = fields.String(validate=validate.OneOf(COUPON_STATUSES))


class CouponListArgs(CouponFilter, Page):
    pass


class StatsFilter(StrictSchema):
    status = fields.String(validate=validate.OneOf(CAMPAIGN_STATUSES), metadata={
        "description": "Only campaigns in this state of their claim window."})


class StatsArgs(StatsFilter, Page):
    pass


# ---- answers (documentation of the responses in the OpenAPI document) -----------------------------------------
S, Int, B = fields.String, fields.Integer, fields.Boolean


def _nullable(field, **kw):
    return field(allow_none=True, **kw)


class MerchantAnswer(StrictSchema):
    id = S()
    name = S()
    uscc = S()
    region_code = S()
    created_at = S()


class CampaignAnswer(StrictSchema):
    id = S()
    title = S()
    merchant_id = S()
    merchant_name = S()
    face_value_cents = Int()
    min_spend_cents = Int()
    quota = Int()
    per_member_limit = Int()
    claim_starts_at = S()
    claim_ends_at = S()
    redeem_ends_at = S()
    eligibility = fields.Nested(Eligibility)
    welcome = B()
    status = S(validate=validate.OneOf(CAMPAIGN_STATUSES))
    remaining = Int(metadata={"description": "Coupons not claimed yet."})
    created_at = S()


class CampaignPage(StrictSchema):
    items = fields.List(fields.Nested(CampaignAnswer))
    next_cursor = _nullable(S)


class CouponAnswer(StrictSchema):
    id = S()
    code = S(metadata={"description": "The one-time code to show as a QR code (%d characters of RFC 4648 base32)."
                                      % CODE_LENGTH})
    campaign_id = S()
    merchant_id = S()
    title = S()
    face_value_cents = Int()
    min_spend_cents = Int()
    status = S(validate=validate.OneOf(COUPON_STATUSES))
    welcome = B()
    claimed_at = S()
    expires_at = S()
    redeemed_at = _nullable(S)


class CouponPage(StrictSchema):
    items = fields.List(fields.Nested(CouponAnswer))
    next_cursor = _nullable(S)


class RedeemAnswer(StrictSchema):
    status = S(validate=validate.Equal("redeemed"))
    coupon_id = S()
    campaign_id = S()
    title = S()
    face_value_cents = Int()
    min_spend_cents = Int()
    redeemed_at = S()


class CampaignStats(StrictSchema):
    campaign_id = S()
    title = S()
    merchant_id = S()
    status = S(validate=validate.OneOf(CAMPAIGN_STATUSES))
    quota = Int()
    claimed = Int()
    remaining = Int()
    redeemed = Int()
    redeemed_value_cents = Int()
    face_value_cents = Int()


class StatsPage(StrictSchema):
    items = fields.List(fields.Nested(CampaignStats))
    next_cursor = _nullable(S)

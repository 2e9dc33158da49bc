"""Marshmallow schemas of membership: the gateway validates HTTP bodies and queries with them, the service validates
its RPC payloads with the very same classes."""
import datetime

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from unionhub_kit import ids
from unionhub_kit.schema import Id, OccupationGroup, Page, Phone, StrictBoolean, StrictSchema, Text, Uscc


LEVELS = ("province", "prefecture", "county", "grassroots")
MEMBER_STATUSES = ("pending", "active", "rejected", "left")
LIVE_STATUSES = ("pending", "active")
TRANSFER_STATUSES = ("pending", "completed", "rejected", "cancelled")
STATS_GROUPS = ("prefecture", "county", "union", "occupation_group")
MIN_PASSWORD = 10
_COMMON = []


def password_problem(password, username=None):
    """Why ``password`` may not be a staff password (None when it may): at least ``MIN_PASSWORD`` characters, not
    the username (nor holding it), and not one of the 30,000 most common leaked passwords (zxcvbn's list), even with
    digits or symbols added at the end."""
    if len(password) < MIN_PASSWORD:
        return "must have at least %d characters." % MIN_PASSWORD
    low = password.lower()
    if username and username.lower() in low:
        return "must not be or contain the username."
    common = _common_passwords()
    core = low.rstrip("0123456789!@#$%^&*._-+=?~ ")
    if low in common or (len(core) >= 6 and core in common):
        return "is one of the most common passwords; choose another."
    return None


def _common_passwords():
    if not _COMMON:
        from zxcvbn.frequency_lists import FREQUENCY_LISTS
        _COMMON.append(frozenset(FREQUENCY_LISTS["passwords"]))
    return _COMMON[0]


ACCOUNT_ROLES = ("union_admin", "merchant", "employer", "integrator")
ORG_CODE = validate.Regexp(r"^\d{2}$|^\d{4}$|^\d{6}$|^\d{10}$", error="must be an organisation code (2, 4, 6 or 10 "
                                                                     "digits).")


class IdNumber(fields.String):
    """A resident ID number (GB 11643): shape, real birth date, check character, holder aged 16 or over."""

    default_error_messages = {"invalid_id": "is not a valid resident ID number: {reason}.",
                              "too_young": "belongs to someone under %d; members must be %d or over."
                                           % (ids.MIN_MEMBER_AGE, ids.MIN_MEMBER_AGE)}

    def _deserialize(self, value, attr, data, **kw):
        v = super()._deserialize(value, attr, data, **kw)
        try:
            number, birth = ids.parse_resident_id(v)
        except ValueError as exc:
            raise self.make_error("invalid_id", reason=str(exc))
        if ids.age_on(birth) < ids.MIN_MEMBER_AGE:
            raise self.make_error("too_young")
        return number


# ---- identity -------------------------------------------------------------------------------------------------
class OtpRequest(StrictSchema):
    phone = Phone(required=True)


class ClientAddress(StrictSchema):
    """The caller's address as the gateway saw it (an RPC argument of ``request_otp``)."""
    address = fields.String(allow_none=True, validate=validate.Length(max=64))


class RefreshRequest(StrictSchema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=256))


class RevocationsQuery(StrictSchema):
    after = fields.AwareDateTime(allow_none=True, default_timezone=datetime.timezone.utc)


class TokenRequest(StrictSchema):
    """Either ``{phone, code}`` (members) or ``{username, password}`` (staff, merchants, employers, integrators)."""
    phone = Phone()
    code = fields.String(validate=validate.Regexp(r"^\d{6}$", error="must be the 6-digit code."))
    username = Text(64)
    password = Text(128)

    @validates_schema
    def one_kind(self, data, **kw):
        otp = "phone" in data or "code" in data
        staff = "username" in data or "password" in data
        if otp == staff:
            raise ValidationError("Send either {phone, code} or {username, password}.")
        for a, b in (("phone", "code"), ("username", "password")):
            if (a in data) != (b in data):
                missing = b if a in data else a
                raise ValidationError("Missing data for required field.", missing)


class AccountCreate(StrictSchema):
    username = fields.String(required=True, validate=validate.Regexp(
        r"^[a-z0-9][a-z0-9_.\-]{2,63}$", error="3-64 characters: lower-case letters, digits, _ . -"))
    password = Text(128, min_len=MIN_PASSWORD, required=True)
    role = fields.String(required=True, validate=validate.OneOf(ACCOUNT_ROLES))
    org_code = fields.String(validate=ORG_CODE)
    merchant_id = Id()
    employer_id = Id()

    @validates_schema
    def password_policy(self, data, **kw):
        if "password" in data:
            why = password_problem(data["password"], data.get("username"))
            if why:
                raise ValidationError(why, "password")

    @validates_schema
    def role_fields(self, data, **kw):
        role = data.get("role")
        needs = {"union_admin": "org_code", "merchant": "merchant_id", "employer": "employer_id"}.get(role)
        if needs and not data.get(needs):
            raise ValidationError("A %s account needs %s." % (role, needs), needs)
        for name in ("merchant_id", "employer_id"):
            if name in data and name != needs:
                raise ValidationError("Only a %s account has %s." % (name.split("_")[0], name), name)


# ---- unions ---------------------------------------------------------------------------------------------------
class UnionFilter(StrictSchema):
    parent_code = fields.String(validate=ORG_CODE)
    level = fields.String(validate=validate.OneOf(LEVELS))


class UnionListArgs(UnionFilter, Page):
    pass


class UnionCreate(StrictSchema):
    name = Text(100, min_len=2, required=True)
    parent_id = Id(required=True)
    uscc = Uscc(required=True)
    auto_approve = StrictBoolean(load_default=False)


# ---- members --------------------------------------------------------------------------------------------------
class JoinRequest(StrictSchema):
    name = Text(50, required=True)
    id_number = IdNumber(required=True)
    union_id = Id(required=True)
    employer = Text(100, required=True)
    occupation_group = OccupationGroup(required=True)
    consent = StrictBoolean(required=True, validate=validate.Equal(
        True, error="must be true: joining needs your consent to the processing of your personal data."))


class TransferRequest(StrictSchema):
    to_union_id = Id(required=True)


class RejectRequest(StrictSchema):
    reason = Text(200, required=True)


class LeaveQuery(StrictSchema):
    erase = fields.Boolean(load_default=False)


class MemberFilter(StrictSchema):
    union_id = Id()
    status = fields.String(validate=validate.OneOf(MEMBER_STATUSES))


class MemberListArgs(MemberFilter, Page):
    pass


class TransferFilter(StrictSchema):
    union_id = Id(metadata={"description": "Transfers into this union."})
    status = fields.String(validate=validate.OneOf(TRANSFER_STATUSES))


class TransferListArgs(TransferFilter, Page):
    pass


class StatsQuery(StrictSchema):
    group_by = fields.String(load_default="prefecture", validate=validate.OneOf(STATS_GROUPS))
    status = fields.String(load_default="active", validate=validate.OneOf(MEMBER_STATUSES))


# ---- answers (documentation of the responses in /openapi.json) -------------------------------------------------
S, B, Int, DT = fields.String, fields.Boolean, fields.Integer, fields.String  # DT: RFC 3339 UTC


def _nullable(field_cls, **kw):
    return field_cls(allow_none=True, **kw)


class OtpAnswer(Schema):
    expires_in = Int(metadata={"description": "Seconds the code stays valid."})


class TokenAnswer(Schema):
    access_token = S()
    token_type = S(metadata={"example": "Bearer"})
    expires_in = Int(metadata={"description": "Seconds the access token lives (at most 900)."})
    role = S(validate=validate.OneOf(("member",) + ACCOUNT_ROLES))
    refresh_token = S(metadata={"description": "Single use: POST /api/v1/auth/refresh spends it for a new pair; "
                                               "presenting a spent one ends the login."})


class AccountAnswer(Schema):
    id = S()
    username = S()
    role = S()
    scope = _nullable(S)
    merchant_id = _nullable(S)
    employer_id = _nullable(S)
    created_at = DT()
    disabled = B()


class UnionAnswer(Schema):
    id = S()
    code = S(metadata={"description": "Organisation code: the region code, or county/prefecture + 4 digits."})
    name = S()
    level = S(validate=validate.OneOf(LEVELS))
    parent_id = _nullable(S)
    region_code = S()
    auto_approve = B()
    uscc = _nullable(S)


class UnionPage(Schema):
    items = fields.List(fields.Nested(UnionAnswer))
    next_cursor = _nullable(S)


class JoinAnswer(Schema):
    id = S()
    status = S(validate=validate.OneOf(LIVE_STATUSES))
    card_no = _nullable(S)
    union_id = S()


class TransferAnswer(Schema):
    id = S()
    member_id = S()
    from_union_id = S()
    to_union_id = S()
    status = S(validate=validate.OneOf(TRANSFER_STATUSES))
    created_at = DT()
    decided_at = _nullable(DT)
    reason = _nullable(S)


class TransferPage(Schema):
    items = fields.List(fields.Nested(TransferAnswer))
    next_cursor = _nullable(S)


class MemberAnswer(Schema):
    id = S()
    name = _nullable(S, metadata={"description": "null once erased"})
    id_number_masked = _nullable(S, metadata={"example": "5101**********1236"})
    phone_masked = _nullable(S, metadata={"example": "138****5678"})
    union_id = S()
    union_code = S()
    status = S(validate=validate.OneOf(MEMBER_STATUSES))
    card_no = _nullable(S)
    occupation_group = S()
    employer = _nullable(S)
    joined_at = _nullable(DT)
    created_at = DT()
    reject_reason = _nullable(S)
    erased = B()
    pending_transfer = fields.Nested(TransferAnswer, allow_none=True, metadata={"description": "GET /members/me"})


class MemberPage(Schema):
    items = fields.List(fields.Nested(MemberAnswer))
    next_cursor = _nullable(S)


class ReviewAnswer(Schema):
    id = S()
    status = S(validate=validate.OneOf(("active", "rejected")))
    card_no = S(metadata={"description": "approve"})
    reason = S(metadata={"description": "reject"})


class StatsItem(Schema):
    key = S()
    name = S()
    count = Int()


class StatsAnswer(Schema):
    group_by = S()
    status = S()
    scope = S()
    total = Int()
    items = fields.List(fields.Nested(StatsItem))

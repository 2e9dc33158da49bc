"""Membership rules without a broker or a store: states and transitions, codes and card numbers, passwords, login
codes, scopes, masking and the views returned to callers."""
import datetime
import hashlib
import hmac
import math
import secrets

from bson import ObjectId

from unionhub_kit import crypto, events, ids, regions
from unionhub_kit.actors import require_role, require_scope, scope_of  # noqa: F401
from unionhub_kit.errors import Conflict, Forbidden, RateLimited, Unauthorized, validation_error

from .schemas import (  # noqa: F401  (the contract's values, validated at the gateway too)
    LEVELS, MEMBER_STATUSES, LIVE_STATUSES, TRANSFER_STATUSES, STATS_GROUPS, MIN_PASSWORD, password_problem)

# member state machine: action -> (allowed from, to)
TRANSITIONS = {
    "approve": (("pending",), "active"),
    "reject": (("pending",), "rejected"),
    "leave": (("pending", "active"), "left"),
    "transfer": (("active",), "active"),
}

OTP_TTL_SECONDS = 300
OTP_MIN_INTERVAL_SECONDS = 60
OTP_PER_HOUR = 5
OTP_MAX_TRIES = 5
REFRESH_TTL_SECONDS = 30 * 24 * 3600  # a login lasts 30 days of refreshing at most
SPENT_REFRESH_KEPT = 50  # spent refresh tokens remembered per login (presenting one again ends the login)
REVOCATION_KEEP_SECONDS = 20 * 60  # longer than an access token lives: older revocations no longer matter
REVOCATIONS_PAGE = 1000
LOCKOUT_AFTER = 5  # wrong staff passwords in a row that lock the username (for LOGIN_LOCKOUT_SECONDS)
CARD_PREFIX = "SC"
CONSENT_VERSION = "2024-01"
PASSWORD_PARAMS = {"n": 2 ** 14, "r": 8, "p": 1}


def new_id(prefix):
    """A time-ordered opaque id (``mbr_65f0...``): string order is creation order, which lists page by."""
    return "%s_%s" % (prefix, ObjectId())


def union_id_for(code):
    """Unions are addressed by a stable id derived from their (immutable, unique) organisation code."""
    return "un_%s" % code


# ---- states -----------------------------------------------------------------------------------------------------
def check_transition(status, action):
    """The status after ``action`` from ``status``; ``Conflict`` when the member is not in a state that allows it."""
    allowed, to = TRANSITIONS[action]
    if status not in allowed:
        raise Conflict("The membership is %s; %s needs it to be %s." % (status, action, " or ".join(allowed)),
                       code="NOT_PENDING" if allowed == ("pending",) else "NOT_ACTIVE" if allowed == ("active",)
                       else "NOT_A_MEMBER")
    return to


def initial_status(union):
    """A join starts active in a union that approves at once, pending otherwise."""
    return "active" if union.get("auto_approve") else "pending"


def card_no(year, seq):
    """``SC2026000000042``: platform prefix, year of issue, a counter that never repeats within the year."""
    return "%s%04d%08d" % (CARD_PREFIX, year, seq)


def grassroots_code(parent_code, seq):
    """The code of a new grassroots union: its county's (or prefecture's) six-digit code + a 4-digit sequence."""
    if seq > 9999:
        raise Conflict("No more grassroots codes under %s." % parent_code, code="CODE_SPACE_EXHAUSTED")
    return "%s%04d" % (parent_code, seq)


def check_union_parent(parent):
    """A grassroots union hangs under a county or a prefecture union."""
    if parent["level"] not in ("county", "prefecture"):
        raise validation_error({"parent_id": ["must be a county or prefecture union (this one is a %s union)."
                                              % parent["level"]]})


def check_joinable(union):
    if union["level"] != "grassroots":
        raise validation_error({"union_id": ["members join a grassroots union (this one is a %s union)."
                                             % union["level"]]})


# ---- scopes and roles -----------------------------------------------------------------------------------------


def account_scope(actor, payload, org_exists):
    """The scope a new account gets, checked against the creating admin's scope.

    ``org_exists(code)`` tells whether an organisation code names a union (region unions are seeded).
    """
    role = payload["role"]
    org = payload.get("org_code")
    if role == "integrator" and len(scope_of(actor)) != 2:
        raise Forbidden("Only a province-level admin creates integrator accounts.", code="OUT_OF_SCOPE")
    if org is None:
        return None
    org = regions.normalize_prefix(org)
    if not org_exists(org):
        raise validation_error({"org_code": ["is not the code of a union organisation."]})
    require_scope(actor, org)
    return org


def require_bound_in_scope(actor, region_code):
    """An account bound to a merchant or employer: that merchant or employer must lie in the creator's scope."""
    if region_code is not None:
        require_scope(actor, region_code)


# ---- passwords and login codes --------------------------------------------------------------------------------
def hash_password(password, salt=None):
    """``scrypt$n$r$p$<salt hex>$<hash hex>``."""
    salt = salt or secrets.token_bytes(16)
    p = PASSWORD_PARAMS
    digest = hashlib.scrypt(password.encode(), salt=salt, n=p["n"], r=p["r"], p=p["p"], dklen=32)
    return "scrypt$%d$%d$%d$%s$%s" % (p["n"], p["r"], p["p"], salt.hex(), digest.hex())


def needs_rehash(stored):
    """A hash made with other parameters (or another scheme) than today's: rehashed at the next right login."""
    return not stored.startswith("scrypt$%(n)d$%(r)d$%(p)d$" % PASSWORD_PARAMS)


DUMMY_HASH = None  # computed on first use: compared against when a username is unknown (same time either way)


def verify_password(password, stored):
    """Constant-time check of ``password`` against ``stored`` (a missing account still costs one scrypt)."""
    global DUMMY_HASH
    if stored is None:
        DUMMY_HASH = DUMMY_HASH or hash_password("unknown-account")
        stored, ok = DUMMY_HASH, False
    else:
        ok = True
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest) and ok


def seconds_until(when, now):
    """Whole seconds from ``now`` to ``when`` (at least 1): a Retry-After."""
    return max(1, math.ceil((when - now).total_seconds()))


def client_key(address):
    """The keyed hash a client address is counted by (addresses are not stored in the clear)."""
    return crypto.keyed_hash(address, "client-address")


def too_many_codes_from_here(retry_after):
    return RateLimited("Too many login codes from your address; try again later.", code="RATE_LIMITED",
                       retry_after=retry_after)


def locked_out(retry_after):
    return RateLimited("Too many wrong passwords: this account is locked for a while.", code="RATE_LIMITED",
                       retry_after=retry_after)


def new_otp():
    """A six-digit login code from the system's CSPRNG."""
    return "%06d" % secrets.randbelow(10 ** 6)


def phone_key(phone):
    """The keyed hash a phone is looked up by (users, login codes)."""
    return crypto.keyed_hash(phone, "phone")


def otp_hash(phone_key_, code):
    return crypto.keyed_hash("%s:%s" % (phone_key_, code), "otp")


def same_code(stored_hash, phone_key_, code):
    return hmac.compare_digest(stored_hash or "", otp_hash(phone_key_, code))


def new_refresh_token(sid):
    """``<sid>.<secret>``: the login it continues, and 256 random bits (only a keyed hash is stored)."""
    return "%s.%s" % (sid, secrets.token_urlsafe(32))


def refresh_hash(token):
    return crypto.keyed_hash(token, "refresh-token")


def session_of(token):
    """The login id a refresh token names (None for something that is not one)."""
    sid, sep, rest = token.partition(".")
    return sid if sep and sid.startswith("ses_") and rest else None


def invalid_refresh():
    return Unauthorized("The refresh token is not valid; log in again.", code="INVALID_TOKEN")


def refresh_reused():
    return Unauthorized("This refresh token was already used: the login has been ended; log in again.",
                        code="REFRESH_TOKEN_REUSED")


def revocation_view(r):
    """What the gateways keep of a revocation (no personal data: ids and times)."""
    out = {"id": r["_id"], "kind": r["kind"], "at": events.rfc3339(r["at"])}
    if r["kind"] == "session":
        out["sid"] = r["sid"]
    else:
        out.update(sub=r["sub"], not_before=r["not_before"])
    return out


def can_disable(actor, account):
    """A union_admin disables accounts in its scope: union_admin accounts by their scope, merchant and employer
    accounts by their merchant's or employer's region; integrators and region-less ones only at province level."""
    prefix = scope_of(actor)
    where = account.get("scope") or account.get("region_code")
    if where is None:
        if len(prefix) != 2:
            raise Forbidden("Only a province-level admin disables this account.", code="OUT_OF_SCOPE")
        return
    require_scope(actor, where)


def invalid_code():
    return Unauthorized("The code is wrong or expired; request a new one.", code="INVALID_CODE")


def invalid_credentials():
    return Unauthorized("Wrong username or password.", code="INVALID_CREDENTIALS")


# ---- cursors --------------------------------------------------------------------------------------------------
from unionhub_kit.paging import decode_cursor, encode_cursor, page  # noqa: E402,F401


def member_cursor(cursor):
    """A member list's keyset ``(created_at, id)`` from its cursor (``<RFC 3339 time>|<id>``); a bad one is a 400."""
    key = decode_cursor(cursor, r"\d{4}-\d\d-\d\dT[\d:.]+Z\|mbr_[0-9a-z]+")
    if key is None:
        return None
    at, member_id = key.split("|", 1)
    return events.parse_time(at), member_id


# ---- views ----------------------------------------------------------------------------------------------------
def mask_name(name):
    """``张三丰`` -> ``张**``; ``Li Lei`` -> ``L*****``."""
    if not name:
        return None
    return name[0] + "*" * (len(name) - 1)


def union_view(u):
    return {"id": u["_id"], "code": u["code"], "name": u["name"], "level": u["level"], "parent_id": u.get("parent_id"),
            "region_code": u["region_code"], "auto_approve": bool(u.get("auto_approve")), "uscc": u.get("uscc")}


def member_view(m):
    """What the member, and union staff in scope, see of a membership: never the full ID number."""
    return {"id": m["_id"], "name": m.get("name"), "id_number_masked": m.get("id_masked"),
            "phone_masked": m.get("phone_masked"), "union_id": m["union_id"], "union_code": m["union_code"],
            "status": m["status"], "card_no": m.get("card_no"), "occupation_group": m["occupation_group"],
            "employer": m.get("employer"), "joined_at": events.rfc3339(m.get("joined_at")),
            "created_at": events.rfc3339(m.get("created_at")), "reject_reason": m.get("reject_reason"),
            "erased": bool(m.get("erased"))}


def transfer_view(t):
    return {"id": t["_id"], "member_id": t["member_id"], "from_union_id": t["from_union_id"],
            "to_union_id": t["to_union_id"], "status": t["status"], "created_at": events.rfc3339(t["created_at"]),
            "decided_at": events.rfc3339(t.get("decided_at")), "reason": t.get("reason")}


def account_doc(p, scope, created_by, now, account_id=None, region_code=None):
    """A staff / merchant / employer / integrator account as stored, from a loaded ``AccountCreate`` ``p`` (the
    password kept only as its hash; ``region_code``: where a bound merchant / employer account's record is)."""
    doc = {"_id": account_id or new_id("acc"), "username": p["username"], "role": p["role"], "scope": scope,
           "merchant_id": p.get("merchant_id"), "employer_id": p.get("employer_id"), "region_code": region_code,
           "password_hash": hash_password(p["password"]), "created_by": created_by, "created_at": now}
    return {k: v for k, v in doc.items() if v is not None}


def account_view(a):
    return {"id": a["_id"], "username": a["username"], "role": a["role"], "scope": a.get("scope"),
            "merchant_id": a.get("merchant_id"), "employer_id": a.get("employer_id"),
            "created_at": events.rfc3339(a.get("created_at")), "disabled": bool(a.get("disabled_at"))}


def member_data(m):
    """The common part of membership events (``catalog.MemberData``)."""
    return {"member_id": m["_id"], "user_id": m["user_id"], "union_id": m["union_id"], "union_code": m["union_code"],
            "region_code": m["region_code"], "occupation_group": m["occupation_group"], "status": m["status"]}


def joined_data(m, phone):
    """``member_joined`` data: the masked phone only (notify asks ``contact_phone`` by RPC), never the ID number."""
    return dict(member_data(m), card_no=m["card_no"], joined_at=events.rfc3339(m["joined_at"]),
                phone_masked=ids.mask_phone(phone), name_masked=mask_name(m["name"]))


def stats_key(group_by):
    """The member field a statistic groups by."""
    return {"prefecture": "prefecture_code", "county": "region_code", "union": "union_id",
            "occupation_group": "occupation_group"}[group_by]


def count_scopes(m):
    """The region scopes a member is counted in: the province, its prefecture, its county."""
    region = m["region_code"]
    return list(dict.fromkeys([regions.normalize_prefix(region[:2] + "0000"),
                               regions.normalize_prefix(regions.prefecture_of(region)),
                               regions.normalize_prefix(region)]))


def count_changes(m, status, delta):
    """``[(counter id, delta)]``: the member ``m`` counted (``delta`` +1) or no longer counted (-1) as ``status``.
    A counter id is ``<status>|<scope>|<group_by>|<key>``: by prefecture, county and occupation group in each region
    scope the member is in, and once by union (scope ``*``: a scope's unions are those whose code starts with it).
    ``GET /admin/stats/members`` reads one scope's counters of one grouping."""
    out = [("%s|%s|%s|%s" % (status, scope, group_by, m[stats_key(group_by)]), delta)
           for scope in count_scopes(m) for group_by in ("prefecture", "county", "occupation_group")]
    out.append(("%s|*|union|%s" % (status, m["union_id"]), delta))
    # and by the month they joined (``created_at``): how member lists find their pages (store.list_members)
    out += [("%s|%s|month|%s" % (status, scope, month_of(m["created_at"])), delta) for scope in count_scopes(m)]
    return out


def month_of(when):
    return "%04d-%02d" % (when.year, when.month)


def month_bounds(month):
    """``"2026-03"`` -> (its first instant, the next month's first instant), UTC."""
    y, mo = int(month[:4]), int(month[5:])
    lo = datetime.datetime(y, mo, 1, tzinfo=datetime.timezone.utc)
    return lo, datetime.datetime(y + mo // 12, mo % 12 + 1, 1, tzinfo=datetime.timezone.utc)


def counter_fields(counter_id):
    status, scope, group_by, key = counter_id.split("|", 3)
    out = {"status": status, "scope": scope, "group_by": group_by, "key": key}
    if group_by == "union":
        out["union_code"] = key[len("un_"):]
    return out


from unionhub_kit.idempotency import fingerprint  # noqa: E402,F401  (a keyed digest of a request body)


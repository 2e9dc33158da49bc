"""Benefits rules without a broker or a store: claim windows, eligibility, scopes, coupon codes and states, the views
returned to callers and the data of the events benefits publishes.

How the quota holds (see ``store``): a campaign's quota is split over up to ``STOCK_BUCKETS`` *stock buckets*
(documents with a ``left`` count that add up to the quota). A claim is one transaction: the member's guarded claim
count, the coupon, the event in the outbox and, last, a guarded ``left > 0`` decrement of one bucket. Two claims that
take from the same bucket at once conflict and one is retried, so no concurrency, replica count or retry issues
more than the quota, and a claim that fails anywhere leaves every count as it was. Spreading the quota over buckets
keeps concurrent claims off one hot document (on one document they abort each other in a storm of retries), and
each process leases buckets to its own claims (``BucketPool``) so that they do not collide at all.
"""
import random
import secrets

from bson import ObjectId

from unionhub_kit import events, paging, regions
from unionhub_kit.actors import require_in_scope, require_role, scope_of  # noqa: F401
from unionhub_kit.errors import AppError, Conflict, Forbidden, Gone, NotFound

from .schemas import (  # noqa: F401  (the contract's values, validated at the gateway too)
    MAX_CENTS, MAX_QUOTA, MAX_PER_MEMBER, CAMPAIGN_STATUSES, COUPON_STATUSES, CODE_ALPHABET, CODE_LENGTH,
    window_errors)

STATS_SHARDS = 8  # redemption counters are spread over this many documents per campaign
STOCK_BUCKETS = 64  # a campaign's quota is spread over up to this many stock documents


def new_id(prefix):
    """A time-ordered opaque id (``cmp_65f0...``): string order is creation order, which lists page by."""
    return "%s_%s" % (prefix, ObjectId())


def new_code():
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(code):
    """The canonical form of a code as typed or scanned (case and spaces forgiven), or None if it cannot be one."""
    if not isinstance(code, str):
        return None
    c = code.replace(" ", "").replace("-", "").upper()
    if len(c) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in c):
        return None
    return c


# ---- callers and scopes ---------------------------------------------------------------------------------------


def areas_of(eligibility_regions, scope):
    """The region prefixes a campaign is open in: its eligibility regions, or else its creator's whole scope."""
    return sorted(set(eligibility_regions)) if eligibility_regions else [scope]


def _ancestors(prefix):
    """``510104`` -> ``["51", "5101", "510104"]``; a grassroots code adds itself."""
    return [prefix[:n] for n in (2, 4, 6, 10) if n <= len(prefix)]


def area_path(areas):
    """The organisation prefixes whose admins see a campaign: every ancestor of what all its areas share."""
    common = None
    for a in areas:
        path = _ancestors(a)
        common = path if common is None else [p for p in common if p in path]
    return common or []


def region_overlap(prefix):
    """For a ``region_code`` filter: (the broader areas that contain ``prefix``, the prefix narrower areas start
    with). A campaign open in ``51`` is open in ``5101``; one open in ``510104`` is open in part of ``5101``."""
    return _ancestors(prefix), prefix


# ---- campaigns ------------------------------------------------------------------------------------------------


def campaign_status(c, now):
    if now < c["claim_starts_at"]:
        return "upcoming"
    if now < c["claim_ends_at"]:
        return "live"
    return "ended"


def bucket_count(quota):
    return min(quota, STOCK_BUCKETS)


def bucket_id(campaign_id, k):
    return "%s|%03d" % (campaign_id, k)


class BucketPool:
    """One process's view of a campaign's stock buckets: which are free (no claim of this process is taking from
    them right now) and which it saw empty. A claim leases a free bucket, so the claims of one process never take
    from the same bucket at once (and never abort each other); replicas each have their own pool.

    A process keeps taking from the bucket it is on until it is empty (a released bucket with stock left is the next
    leased), then opens another at random. Left partly taken (as before), a process's buckets were soon all over
    the campaign, and the other replica's random picks kept landing on them: a guarded take asking for more than
    was left failed and cost a read (``bench.flash_grab``, 2 replicas). A walk round a ring from a random start
    each was tried and was worse: once one replica caught up with the other they took from the same buckets, one
    batch after another, and most of their transactions were aborted and retried."""

    def __init__(self, count, most=None):
        self.count = count
        self.free = list(range(count))
        random.shuffle(self.free)  # ``lease`` pops from the end
        self.empty = set()
        self.most = most  # the most any bucket started with
        self.known = {}  # bucket -> what it had left when this process last took from it (others may take too)

    def ask(self, k, need):
        """How much to ask of bucket ``k`` for ``need`` claims: no more than it can have left, so that one guarded
        write takes it (asking for more fails the guard and costs a read)."""
        bound = self.known.get(k, self.most)
        return need if bound is None else max(1, min(need, bound))

    def took(self, k, left):
        self.known[k] = left
        if left == 0:
            self.emptied(k)

    def lease(self):
        return self.free.pop() if self.free else None

    def release(self, buckets, conflicted=False):
        """Leased buckets back in the pool; one with stock left is the next leased (its rest is taken before a new
        bucket is opened). ``conflicted``: the transaction that leased them was aborted (another replica wrote one
        of them at the same time): they go to the back, so the retry takes from another bucket instead of meeting
        the other replica on the same one again."""
        for k in reversed(buckets):
            if k not in self.empty and k not in self.free:
                if conflicted:
                    self.free.insert(0, k)
                else:
                    self.free.append(k)

    def emptied(self, k):
        self.empty.add(k)
        if k in self.free:
            self.free.remove(k)

    def learn(self, levels):
        """``levels``: bucket -> what it has left, for every bucket with any left (``store.stock_levels``): the
        buckets not in it are empty (others emptied them: stock never grows back), the others' bounds are known."""
        for k in range(self.count):
            if k not in levels and k not in self.empty:
                self.emptied(k)
        for k, left in levels.items():
            self.known[k] = left


def remaining(c, left):
    """``left`` is the campaign's stock summed over its buckets (None for a campaign just created)."""
    return c["quota"] if left is None else left


def claimed(c, left):
    return c["quota"] - remaining(c, left)


def new_campaign(payload, actor, scope, merchant, now):
    elig = payload["eligibility"]
    areas = areas_of(elig["region_codes"], scope)
    return dict(payload, _id=new_id("cmp"), merchant_name=merchant["name"], scope=scope, areas=areas,
                area_path=area_path(areas), buckets=bucket_count(payload["quota"]), tally=True, created_at=now,
                created_by=actor["sub"], sold_out_at=None)


# ---- eligibility and claims -----------------------------------------------------------------------------------
def not_eligible(detail):
    return Forbidden(detail, code="NOT_ELIGIBLE")


def ineligibility(campaign, member):
    """Why ``member`` (the projection; None when unknown) may not hold a coupon of ``campaign``, or None."""
    if member is None or member.get("status") != "active":
        return "Only active union members can claim coupons."
    union_code, region = member.get("union_code") or "", member.get("region_code") or ""
    if not regions.in_scope(union_code, campaign["scope"]):
        return "This campaign is not for members of your union."
    elig = campaign["eligibility"]
    if elig["region_codes"] and not any(regions.in_scope(region, r) or regions.in_scope(union_code, r)
                                        for r in elig["region_codes"]):
        return "This campaign is not for members in your region."
    if elig["occupation_groups"] and member.get("occupation_group") not in elig["occupation_groups"]:
        return "This campaign is not for your occupation group."
    if elig["union_ids"] and member.get("union_id") not in elig["union_ids"]:
        return "This campaign is not for members of your union."
    return None


def held(member, campaign_id):
    return int(((member or {}).get("claims") or {}).get(campaign_id, 0))


def check_claim(campaign, member, now, pending=0, is_sold_out=False):
    """The checks a claim passes before its transaction, in the order API.md names them (403, then 409).
    ``pending``: the member's claims accepted earlier in the same batch."""
    why = ineligibility(campaign, member)
    if why:
        raise not_eligible(why)
    if campaign.get("welcome"):
        raise not_eligible("Welcome coupons are issued automatically to new members.")
    if campaign_status(campaign, now) != "live":
        raise not_open(campaign, now)
    if held(member, campaign["_id"]) + pending >= campaign["per_member_limit"]:
        raise limit_reached(campaign)
    if is_sold_out:
        raise sold_out()


def decide_claims(campaign, user_ids, members, now, is_sold_out=False):
    """A batch of claims of one campaign, in arrival order: for each, None (to be written) or the ``AppError`` that
    refuses it. ``members``: user id -> projection. The same member twice in one batch counts their first claim
    against the limit of the second."""
    pending, out = {}, []
    for uid in user_ids:
        try:
            check_claim(campaign, members.get(uid), now, pending.get(uid, 0), is_sold_out)
        except AppError as exc:
            out.append(exc)
            continue
        pending[uid] = pending.get(uid, 0) + 1
        out.append(None)
    return out


def not_open(campaign, now):
    when = "has not started yet" if now < campaign["claim_starts_at"] else "is over"
    return Conflict("The claim window %s." % when, code="NOT_OPEN")


def sold_out():
    return Conflict("All coupons of this campaign have been claimed.", code="SOLD_OUT")


def limit_reached(campaign):
    return Conflict("You already hold %d coupon(s) of this campaign, the most one member may."
                    % campaign["per_member_limit"], code="LIMIT_REACHED")


def new_coupon(campaign, user_id, now, welcome=False):
    return {"_id": new_id("cpn"), "code": new_code(), "campaign_id": campaign["_id"],
            "merchant_id": campaign["merchant_id"], "user_id": user_id, "shard": secrets.randbelow(STATS_SHARDS),
            "status": "unused", "title": campaign["title"], "face_value_cents": campaign["face_value_cents"],
            "min_spend_cents": campaign["min_spend_cents"], "claimed_at": now, "expires_at": campaign["redeem_ends_at"],
            "welcome": bool(welcome), "redeemed_at": None}


# ---- redemption -----------------------------------------------------------------------------------------------
def coupon_status(coupon, now):
    """``unused`` becomes ``expired`` at its deadline even before the timer has written it down."""
    if coupon["status"] == "unused" and now >= coupon["expires_at"]:
        return "expired"
    return coupon["status"]


def check_redeem(coupon, actor, now):
    """404 unknown, 403 another merchant's, 409 already redeemed, 410 past its deadline."""
    if coupon is None:
        raise NotFound("No coupon has this code.", code="NOT_FOUND")
    if coupon["merchant_id"] != actor.get("merchant_id"):
        raise Forbidden("This coupon is redeemed at another merchant.", code="FORBIDDEN")
    status = coupon_status(coupon, now)
    if status == "redeemed":
        raise Conflict("This coupon was already redeemed.", code="ALREADY_REDEEMED")
    if status == "expired":
        raise Gone("This coupon expired at %s." % events.rfc3339(coupon["expires_at"]), code="EXPIRED")


# ---- paging ---------------------------------------------------------------------------------------------------
encode_cursor, page = paging.encode_cursor, paging.page


def decode_cursor(cursor):
    """The sort key (an ``<kind>_<id>`` id) in a cursor; a malformed cursor is a 400."""
    return paging.decode_cursor(cursor, r".*_.*")


# ---- views ----------------------------------------------------------------------------------------------------
def merchant_view(m):
    return {"id": m["_id"], "name": m["name"], "uscc": m["uscc"], "region_code": m["region_code"],
            "created_at": events.rfc3339(m["created_at"])}


def campaign_view(c, now, left=None):
    return {"id": c["_id"], "title": c["title"], "merchant_id": c["merchant_id"],
            "merchant_name": c.get("merchant_name"), "face_value_cents": c["face_value_cents"],
            "min_spend_cents": c["min_spend_cents"], "quota": c["quota"], "per_member_limit": c["per_member_limit"],
            "claim_starts_at": events.rfc3339(c["claim_starts_at"]), "claim_ends_at": events.rfc3339(c["claim_ends_at"]),
            "redeem_ends_at": events.rfc3339(c["redeem_ends_at"]), "eligibility": c["eligibility"],
            "welcome": bool(c["welcome"]), "status": campaign_status(c, now), "remaining": remaining(c, left),
            "created_at": events.rfc3339(c["created_at"])}


def coupon_view(cp, now):
    """What the holder sees: the code is theirs to show as a QR code."""
    return {"id": cp["_id"], "code": cp["code"], "campaign_id": cp["campaign_id"], "merchant_id": cp["merchant_id"],
            "title": cp["title"], "face_value_cents": cp["face_value_cents"], "min_spend_cents": cp["min_spend_cents"],
            "status": coupon_status(cp, now), "welcome": bool(cp.get("welcome")),
            "claimed_at": events.rfc3339(cp["claimed_at"]), "expires_at": events.rfc3339(cp["expires_at"]),
            "redeemed_at": events.rfc3339(cp.get("redeemed_at"))}


def redeemed_view(cp):
    """What the merchant sees after a redemption (no code, no holder)."""
    return {"status": "redeemed", "coupon_id": cp["_id"], "campaign_id": cp["campaign_id"], "title": cp["title"],
            "face_value_cents": cp["face_value_cents"], "min_spend_cents": cp["min_spend_cents"],
            "redeemed_at": events.rfc3339(cp["redeemed_at"])}


def stats_view(c, left, counters, now):
    """Per campaign: claimed, redeemed and redeemed value (``counters``: the summed redemption shards)."""
    return {"campaign_id": c["_id"], "title": c["title"], "merchant_id": c["merchant_id"],
            "status": campaign_status(c, now), "quota": c["quota"], "claimed": claimed(c, left),
            "remaining": remaining(c, left),
            "redeemed": counters.get("redeemed", 0), "redeemed_value_cents": counters.get("redeemed_value_cents", 0),
            "face_value_cents": c["face_value_cents"]}


# ---- event data (unionhub_kit.catalog) ------------------------------------------------------------------------
def published_data(c):
    return {"campaign_id": c["_id"], "title": c["title"], "merchant_id": c["merchant_id"],
            "face_value_cents": c["face_value_cents"], "min_spend_cents": c["min_spend_cents"], "quota": c["quota"],
            "per_member_limit": c["per_member_limit"], "claim_starts_at": events.rfc3339(c["claim_starts_at"]),
            "claim_ends_at": events.rfc3339(c["claim_ends_at"]), "redeem_ends_at": events.rfc3339(c["redeem_ends_at"]),
            "eligibility": c["eligibility"], "welcome": bool(c["welcome"])}


def claimed_data(cp):
    """``coupon_claimed``: never the code (a bearer secret)."""
    return {"coupon_id": cp["_id"], "campaign_id": cp["campaign_id"], "user_id": cp["user_id"], "title": cp["title"],
            "face_value_cents": cp["face_value_cents"], "expires_at": events.rfc3339(cp["expires_at"]),
            "welcome": bool(cp["welcome"])}


def redeemed_data(cp):
    return {"coupon_id": cp["_id"], "campaign_id": cp["campaign_id"], "user_id": cp["user_id"],
            "merchant_id": cp["merchant_id"], "title": cp["title"], "face_value_cents": cp["face_value_cents"],
            "redeemed_at": events.rfc3339(cp["redeemed_at"])}


def sold_out_data(c):
    return {"campaign_id": c["_id"], "quota": c["quota"]}


# ---- member projection ----------------------------------------------------------------------------------------

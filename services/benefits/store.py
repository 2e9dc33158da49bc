"""Every pymongo call of benefits, and its indexes.

Collections: ``merchants``; ``campaigns``; ``stock`` (a campaign's quota in buckets, ``left`` each, see ``domain``);
``stock_taken`` (per campaign and process: how much it took; what lists and details read for ``remaining``);
``campaign_months`` (campaigns created per scope and month: the stats pages' windows are sized from them);
``coupons`` (unique ``code``; at most one welcome coupon per campaign and member); ``members`` (the projection of
membership's events, with the per-campaign claim counts ``claims.<campaign_id>``); ``welcome_grants`` (one per
campaign and member, ever); ``redemptions`` (redemption counters, sharded); ``idempotency`` (caller + key -> first
result, ``unionhub_kit.idempotency``).

Every write that must hold with others is made inside the caller's transaction (``session``) with a guard in its
filter; nothing reads and then writes outside one.
"""
from datetime import datetime, timedelta, timezone

import pymongo
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError  # noqa: F401  (callers catch it from here)

from unionhub_kit import projection
from unionhub_kit.errors import Conflict, validation_error
from unionhub_kit.mongo import insert_unique, transaction, update_returning

from . import domain

ASC, DESC = pymongo.ASCENDING, pymongo.DESCENDING


def ensure_indexes(db):
    db.merchants.create_index([("uscc", ASC)], unique=True)
    db.campaigns.create_index([("area_path", ASC), ("_id", DESC)])
    db.campaigns.create_index([("created_at", ASC)])
    db.campaigns.create_index([("areas", ASC)])
    db.campaigns.create_index([("welcome", ASC), ("claim_ends_at", ASC)])
    db.campaigns.create_index([("redeem_ends_at", ASC), ("expiry_done", ASC)])
    db.stock.create_index([("campaign_id", ASC), ("pos", ASC)])
    db.stock_taken.create_index([("campaign_id", ASC)])
    db.coupons.create_index([("code", ASC)], unique=True)
    db.coupons.create_index([("campaign_id", ASC), ("user_id", ASC)], unique=True,
                            partialFilterExpression={"welcome": True}, name="one_welcome_coupon")
    db.coupons.create_index([("user_id", ASC), ("_id", DESC)])
    db.coupons.create_index([("campaign_id", ASC), ("status", ASC)])
    db.redemptions.create_index([("campaign_id", ASC)])
    db.campaign_months.create_index([("scope", ASC), ("month", ASC)])
    build_campaign_months(db)


# ---- merchants ------------------------------------------------------------------------------------------------
def insert_merchant(db, doc, session):
    insert_unique(db.merchants, doc, session, Conflict("A merchant with this USCC exists already.",
                                                       code="MERCHANT_EXISTS"), ("uscc",))


def merchant(db, merchant_id):
    return db.merchants.find_one({"_id": merchant_id})


# ---- campaigns and their stock --------------------------------------------------------------------------------
def status_filter(status, now):
    """The store filter of a campaign status."""
    if status == "live":
        return {"claim_starts_at": {"$lte": now}, "claim_ends_at": {"$gt": now}}
    if status == "upcoming":
        return {"claim_starts_at": {"$gt": now}}
    if status == "ended":
        return {"claim_ends_at": {"$lte": now}}
    return {}


def stock_buckets(campaign_id, quota):
    """The stock documents of a new campaign: ``bucket_count(quota)`` buckets whose ``left`` add up to the quota,
    at evenly spaced ``pos`` in [0, 1) so a uniformly random start picks each with the same chance."""
    n = domain.bucket_count(quota)
    base, extra = divmod(quota, n)
    return [{"_id": domain.bucket_id(campaign_id, k), "campaign_id": campaign_id, "k": k, "pos": k / n,
             "left": base + (1 if k < extra else 0)} for k in range(n)]


def insert_campaign(db, doc, session):
    db.campaigns.insert_one(doc, session=session)
    db.stock.insert_many(stock_buckets(doc["_id"], doc["quota"]), session=session)
    count_campaigns(db, [doc], session)


# ---- campaigns per scope and month (what sizes the stats pages' windows) ----------------------------------------
MONTHS_BUILT = "built"  # the marker: the counters were built from the campaigns once and are kept since


def _month(t):
    return "%04d-%02d" % (t.year, t.month)


def count_campaigns(db, docs, session, replace=False):
    """``docs`` counted in ``campaign_months``: one more campaign of its creation month for each scope of its
    ``area_path`` (``replace``: ``docs`` are all the campaigns, the counters are set to their counts)."""
    counts = {}
    for d in docs:
        for scope in d.get("area_path") or ():
            key = (scope, _month(d["created_at"]))
            counts[key] = counts.get(key, 0) + 1
    op = "$set" if replace else "$inc"
    ops = [UpdateOne({"_id": "%s|%s" % key}, {op: {"n": n}, "$setOnInsert": {"scope": key[0], "month": key[1]}},
                     upsert=True) for key, n in sorted(counts.items())]
    if ops:
        db.campaign_months.bulk_write(ops, ordered=False, session=session)


def build_campaign_months(db, rebuild=False):
    """The counters from the campaigns, once per store (at start: a store whose campaigns were made before the
    counters existed); ``rebuild``: again (``make seed-scale`` after loading campaigns in bulk). One transaction:
    a campaign created meanwhile conflicts with it and one of the two is retried."""
    def build(session):
        if not rebuild and db.campaign_months.find_one({"_id": MONTHS_BUILT}, session=session):
            return
        if rebuild:
            db.campaign_months.delete_many({}, session=session)
        count_campaigns(db, list(db.campaigns.find({}, {"created_at": 1, "area_path": 1}, session=session)),
                        session, replace=True)
        db.campaign_months.insert_one({"_id": MONTHS_BUILT}, session=session)
    try:
        transaction(db, build, timeout=600)
    except DuplicateKeyError:  # another process built them first
        pass


def campaign(db, campaign_id):
    return db.campaigns.find_one({"_id": campaign_id})


def campaigns_page(db, flt, cursor, limit):
    q = dict(flt)
    if cursor:
        q["_id"] = {"$lt": cursor}
    return list(db.campaigns.find(q).sort("_id", DESC).limit(limit + 1))


def _id_time(cursor):
    """When the campaign a cursor names was made (its id's ObjectId); a cursor that names none is a 400."""
    try:
        return ObjectId(cursor.split("_", 1)[1]).generation_time
    except (InvalidId, IndexError, TypeError):
        raise validation_error({"cursor": ["is not a cursor this list gave out."]})


def scoped_campaigns_page(db, scope, status, cursor, limit, now):
    """A page of the campaigns created in ``scope`` (``area_path``), of one status or any, newest first.

    Read in windows of ``created_at`` back from the cursor on the ``created_at`` index, each sized from the
    scope's campaigns per month (``campaign_months``) to hold about a page: the embedded store fetches every match
    of a query before it sorts and limits, and a province admin's scope holds every campaign (1,000 a year). Fixed
    windows (a month, a year, ten years) read all 1,000 for each page once every campaign was older than a month
    (the seed's: 10.5x the empty store's p95); these read about ``limit`` campaigns per page of any store (more
    only when a status filter leaves out most of them), and skip months with none without a query."""
    flt = dict(status_filter(status, now), area_path=scope)
    top = _id_time(cursor) + timedelta(seconds=1) if cursor else now + timedelta(days=1)
    found = []
    for lo, hi in campaign_windows(db, scope, top, limit + 1):
        q = dict({"created_at": {"$gte": lo, "$lt": hi}}, **flt)  # created_at first: the index that bounds it
        found += [d for d in db.campaigns.find(q) if cursor is None or d["_id"] < cursor]
        if len(found) > limit:
            break
    found.sort(key=lambda d: d["_id"], reverse=True)
    return found[:limit + 1]


def campaign_windows(db, scope, top, want):
    """``[lo, hi)`` windows of creation time below ``top``, newest first, covering every month in which ``scope``
    has campaigns: a month with ``n`` of them is cut into ``ceil(n / want)`` equal spans (so each holds about
    ``want`` when they are spread over the month). Months with fewer than ``want`` are joined with the older ones
    after them, up to and including the first span that makes the window hold ``want`` (one query for a few sparse
    months, not one each: the seed-scale store's last two months held 4 and 11 campaigns, and a page of 20 read
    three windows where the empty store's read one). Reads the scope's month counters (12 small documents a
    year)."""
    months = sorted((d["month"], d["n"]) for d in db.campaign_months.find(
        {"scope": scope, "month": {"$lte": _month(top)}}, {"month": 1, "n": 1}) if d.get("n", 0) > 0)
    joined, held, oldest = None, 0, None  # sparse months being joined: the window's newest end, its count, oldest start
    for month, n in reversed(months):
        start = datetime(int(month[:4]), int(month[5:]), 1, tzinfo=timezone.utc)
        end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=timezone.utc)
        parts = -(-n // want)
        step = (end - start) / parts
        for k in range(parts, 0, -1):
            lo, hi = start + step * (k - 1), (start + step * k if k < parts else end)
            if lo >= top:
                continue
            hi = min(hi, top)
            if joined is None and n >= want:
                yield lo, hi
                continue
            joined, held, oldest = joined or hi, held + n / parts, lo
            if held >= want or n >= want:
                yield lo, joined
                joined, held = None, 0
    if joined is not None:
        yield oldest, joined


def campaign_filter(args, now):
    """The store filter of a list query (status, region, merchant, welcome)."""
    flt = status_filter(args.get("status"), now)
    if args.get("region_code"):
        broader, narrower = domain.region_overlap(args["region_code"])
        flt["$or"] = [{"areas": {"$in": broader}}, {"areas": {"$regex": "^%s" % narrower}}]
    if args.get("merchant_id"):
        flt["merchant_id"] = args["merchant_id"]
    if args.get("welcome") is not None:
        flt["welcome"] = args["welcome"]
    return flt


def live_welcome_campaigns(db, now):
    return list(db.campaigns.find(dict(status_filter("live", now), welcome=True)))


def stock_left(db, campaigns):
    """campaign id -> coupons left, never more than what is. A campaign that keeps tallies: its quota minus what
    the tallies say was taken (a few small documents, one per process that took any; each only grows, so reading
    them one after another can only understate what is left); an older campaign: its buckets summed."""
    out = {c["_id"]: c["quota"] for c in campaigns if c.get("tally")}
    if out:
        for d in db.stock_taken.find({"campaign_id": {"$in": list(out)}}, {"campaign_id": 1, "taken": 1}):
            out[d["campaign_id"]] -= d["taken"]
    older = [c["_id"] for c in campaigns if not c.get("tally")]
    if older:
        out.update(dict.fromkeys(older, 0))
        for d in db.stock.find({"campaign_id": {"$in": older}}, {"campaign_id": 1, "left": 1}):
            out[d["campaign_id"]] += d["left"]
    return {cid: max(0, left) for cid, left in out.items()}


def tally_taken(db, campaign_id, process, n, session):
    """``n`` more taken from the campaign's stock by ``process``, in the transaction that took them (one document
    per campaign and process, so replicas never write the same one)."""
    db.stock_taken.update_one({"_id": "%s|%s" % (campaign_id, process)},
                              {"$inc": {"taken": n}, "$setOnInsert": {"campaign_id": campaign_id}},
                              upsert=True, session=session)


def take_stock(db, campaign_id, k, want, session):
    """Up to ``want`` coupons' worth off bucket ``k``: ``(how many were taken, what the bucket has left)``. A write
    and a point read when the bucket has enough (the usual case; no ``findAndModify``, which the embedded store
    answers with a collection scan: ``update_returning``); else a read and a write guarded by what was read,
    taking all that is left."""
    _id = domain.bucket_id(campaign_id, k)
    doc = update_returning(db.stock, {"_id": _id, "left": {"$gte": want}}, {"$inc": {"left": -want}}, {"left": 1},
                           session=session)
    if doc is not None:
        return want, doc["left"]
    doc = db.stock.find_one({"_id": _id}, {"left": 1}, session=session)
    left = doc["left"] if doc else 0
    if left <= 0:
        return 0, 0
    res = db.stock.update_one({"_id": _id, "left": left}, {"$inc": {"left": -left}}, session=session)
    return (left, 0) if res.modified_count == 1 else (0, 0)


def stock_levels(db, campaign_id, session):
    """bucket number -> what it has left, for the campaign's buckets with any left (one query over at most 64 small
    documents): what a process learns at once when it finds a bucket emptied by another replica."""
    return {int(d["_id"].rsplit("|", 1)[1]): d["left"]
            for d in db.stock.find({"campaign_id": campaign_id, "left": {"$gt": 0}}, {"left": 1}, session=session)}


def take_any_stock(db, campaign_id, start, session):
    """One coupon's worth off any bucket with some left, looking from ``start`` in [0, 1) on (wrapping round); the
    bucket after the decrement, or None when the campaign has nothing left."""
    for pos in ({"$gte": start}, {"$lt": start}):
        found = db.stock.find_one({"campaign_id": campaign_id, "left": {"$gt": 0}, "pos": pos}, {"_id": 1},
                                  sort=[("pos", ASC)], session=session)
        if found is not None:
            # by _id, guarded: a concurrent take that emptied it conflicts with this transaction (retried)
            doc = update_returning(db.stock, {"_id": found["_id"], "left": {"$gt": 0}}, {"$inc": {"left": -1}},
                                   session=session)
            if doc is not None:
                return doc
    return None


def any_stock_left(db, campaign_id, session=None):
    return db.stock.find_one({"campaign_id": campaign_id, "left": {"$gt": 0}}, {"_id": 1}, session=session) is not None


def mark_sold_out(db, campaign_id, now, session):
    """True for the one transaction that marks the campaign sold out: none of its stock is left (stock only ever
    goes down, so that stays true) and no one marked it before."""
    if any_stock_left(db, campaign_id, session):
        return False
    res = db.campaigns.update_one({"_id": campaign_id, "sold_out_at": None}, {"$set": {"sold_out_at": now}},
                                  session=session)
    return res.modified_count == 1


# ---- members (projection) -------------------------------------------------------------------------------------
def member(db, user_id):
    return db.members.find_one({"_id": user_id})


def members(db, user_ids):
    """user id -> projection, for those of ``user_ids`` benefits knows (one query)."""
    return {d["_id"]: d for d in db.members.find({"_id": {"$in": list(set(user_ids))}})}

def project_member(db, user_id, fields, as_of, session):
    """The member projection after a membership event (``unionhub_kit.projection``: an older event changes nothing)."""
    return projection.project_member(db.members, user_id, fields, as_of, session)


def count_claim(db, user_id, campaign_id, limit, session):
    """+1 on the member's count for the campaign if the member is active and below ``limit``; False otherwise."""
    field = "claims.%s" % campaign_id
    res = db.members.update_one({"_id": user_id, "status": "active", field: {"$not": {"$gte": limit}}},
                                {"$inc": {field: 1}}, session=session)
    return res.matched_count == 1


def count_claims(db, campaign_id, limit, per_user, session):
    """+n on each member's count for the campaign (``per_user``: user id -> n), each guarded like ``count_claim``:
    one write per distinct n (nearly always one). False if any member was not active or would pass ``limit`` (the
    caller aborts the transaction and decides again)."""
    field = "claims.%s" % campaign_id
    by_n = {}
    for uid, n in per_user.items():
        by_n.setdefault(n, []).append(uid)
    for n, users in by_n.items():
        res = db.members.update_many({"_id": {"$in": users}, "status": "active", field: {"$not": {"$gt": limit - n}}},
                                     {"$inc": {field: n}}, session=session)
        if res.matched_count != len(users):
            return False
    return True


def grant_welcome(db, campaign_id, user_id, now, session):
    """Record that the member got (or was considered for) the campaign's welcome coupon; False if ever before.

    An upsert, not an insert: a duplicate-key error would abort the surrounding transaction.
    """
    res = db.welcome_grants.update_one(
        {"_id": "%s|%s" % (campaign_id, user_id)},
        {"$setOnInsert": {"campaign_id": campaign_id, "user_id": user_id, "created_at": now}},
        upsert=True, session=session)
    return res.upserted_id is not None


# ---- coupons --------------------------------------------------------------------------------------------------
def insert_coupon(db, coupon, session):
    db.coupons.insert_one(coupon, session=session)


def insert_coupons(db, coupons, session):
    db.coupons.insert_many(coupons, session=session)


def coupon_by_code(db, code):
    return db.coupons.find_one({"code": code})


def redeem(db, coupon_id, merchant_id, now, session):
    """unused -> redeemed, only before the deadline; the updated coupon, or None when it was not unused."""
    return update_returning(
        db.coupons, {"_id": coupon_id, "status": "unused", "merchant_id": merchant_id, "expires_at": {"$gt": now}},
        {"$set": {"status": "redeemed", "redeemed_at": now}}, session=session)


def count_redemption(db, coupon, session):
    key = "%s|%d" % (coupon["campaign_id"], coupon["shard"])
    db.redemptions.update_one({"_id": key}, {"$inc": {"redeemed": 1, "redeemed_value_cents": coupon["face_value_cents"]},
                                             "$set": {"campaign_id": coupon["campaign_id"]}},
                              upsert=True, session=session)


def redemption_totals(db, campaign_ids):
    """campaign id -> {redeemed, redeemed_value_cents} summed over its shards."""
    out = {}
    for d in db.redemptions.find({"campaign_id": {"$in": list(campaign_ids)}}):
        t = out.setdefault(d["campaign_id"], {"redeemed": 0, "redeemed_value_cents": 0})
        t["redeemed"] += d.get("redeemed", 0)
        t["redeemed_value_cents"] += d.get("redeemed_value_cents", 0)
    return out


def coupons_page(db, user_id, status, cursor, limit, now):
    q = {"user_id": user_id}
    if status == "unused":
        q.update(status="unused", expires_at={"$gt": now})
    elif status == "expired":
        q["$or"] = [{"status": "expired"}, {"status": "unused", "expires_at": {"$lte": now}}]
    elif status:
        q["status"] = status
    if cursor:
        q["_id"] = {"$lt": cursor}
    return list(db.coupons.find(q).sort("_id", DESC).limit(limit + 1))


def campaigns_due_for_expiry(db, before, limit=20):
    return list(db.campaigns.find({"redeem_ends_at": {"$lt": before}, "expiry_done": {"$ne": True}},
                                  {"_id": 1, "redeem_ends_at": 1}).limit(limit))


def expire_batch(db, campaign_id, now, batch):
    """unused -> expired for up to ``batch`` coupons of a campaign past its deadline; how many changed."""
    ids = [d["_id"] for d in db.coupons.find({"campaign_id": campaign_id, "status": "unused"}, {"_id": 1}).limit(batch)]
    if not ids:
        return 0
    res = db.coupons.update_many({"_id": {"$in": ids}, "status": "unused"},
                                 {"$set": {"status": "expired", "expired_at": now}})
    return res.modified_count


def mark_expiry_done(db, campaign_id):
    db.campaigns.update_one({"_id": campaign_id}, {"$set": {"expiry_done": True}})

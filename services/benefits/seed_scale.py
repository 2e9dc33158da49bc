"""Benefits' part of ``make seed-scale`` (``deploy/seed_scale.py`` runs it): the member projection as the membership
events built it (``member_joined`` for active members, ``member_left`` for those who left; pending members sent no
event), and a year of campaigns and coupons at the capacity model's volume (``--coupons-per-user``, default 6.7: about
50 million a year on 7.5 million users): 1,000 programmes over the past year by 200 merchants, all ended, each
coupon redeemed (45 %) or expired, with the redemption counters and the members' per-campaign counts that claiming
and redeeming them wrote. Live campaigns are not seeded: the benchmarks create their own.
"""
import datetime
import random
import struct

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError

from unionhub_kit import ids, population, projection, regions
from unionhub_kit.mongo import transaction

from . import domain, store

CAMPAIGNS = 1000
MERCHANTS = 200
REDEEMED = 0.45


def run(ctx):
    db = ctx.db("benefits")
    store.ensure_indexes(db)
    campaigns = ctx.once(db, "campaigns", lambda: load_campaigns(ctx, db)) or list(
        db.campaigns.find({"created_by": "seed"}, {"title": 1, "merchant_id": 1, "face_value_cents": 1,
                                                    "min_spend_cents": 1, "redeem_ends_at": 1, "claim_starts_at": 1}))
    per_user = ctx.per_user["coupons"]
    for b, people in ctx.batches(db, "members+coupons"):
        rng = random.Random("benefits:%d" % b)
        members, coupons, redeemed = [], [], {}
        for p in people:
            m = p["member"]
            if not m or m["status"] == "pending":
                continue
            doc = dict(projection.member_fields(m), _id=p["user_id"],
                       as_of=m["joined_at"])
            claims = {}
            for _ in range(_count(rng, per_user / population.MEMBER_SHARE)):
                c = rng.choice(campaigns)
                cp = coupon(rng, c, p["user_id"], b * 10_000_000 + len(coupons))
                claims[c["_id"]] = claims.get(c["_id"], 0) + 1
                coupons.append(cp)
                if cp["status"] == "redeemed":
                    t = redeemed.setdefault((c["_id"], cp["shard"]), [0, 0])
                    t[0] += 1
                    t[1] += cp["face_value_cents"]
            if claims:
                doc["claims"] = claims
            members.append(doc)
        ctx.insert(db.members, members)
        ctx.insert(db.coupons, coupons)
        add_redemptions(db, b, redeemed)


def add_redemptions(db, b, redeemed):
    """The batch's redemptions into the campaigns' counters (shard 0), once: the batch's mark and the increments
    are one transaction."""
    totals = {}
    for (cid, _shard), (n, v) in redeemed.items():
        t = totals.setdefault(cid, [0, 0])
        t[0] += n
        t[1] += v
    ops = [UpdateOne({"_id": "%s|0" % cid}, {"$inc": {"redeemed": n, "redeemed_value_cents": v},
                                             "$setOnInsert": {"campaign_id": cid}}, upsert=True)
           for cid, (n, v) in totals.items()]

    def txn(session):
        db.seed_scale.insert_one({"_id": "redemptions-%d" % b}, session=session)
        if ops:
            db.redemptions.bulk_write(ops, ordered=False, session=session)
    try:
        transaction(db, txn)
    except DuplicateKeyError:  # counted when this batch was loaded before
        pass


def _count(rng, mean):
    """A small count with the given mean (geometric-ish: most members claim a few, some many)."""
    whole = int(mean)
    return whole + (1 if rng.random() < mean - whole else 0) if mean < 3 else rng.randint(0, int(2 * mean))


def load_campaigns(ctx, db):
    rng = random.Random("benefits:campaigns")
    end = ctx.province.epoch
    merchants = []
    for n in range(MERCHANTS):
        county = rng.choice(ctx.province.counties)
        merchants.append({"_id": "mch_seed%04d" % n, "name": "%s惠民商户%d" % (regions.all_codes()[county], n),
                          "uscc": ids.make_uscc("92%s%09d" % (county, n)), "region_code": county,
                          "created_at": end - datetime.timedelta(days=400), "created_by": "seed"})
    ctx.insert(db.merchants, merchants)
    campaigns = []
    prefectures = [p["code"] for p in regions.prefectures()]
    for n in range(CAMPAIGNS):
        merchant = rng.choice(merchants)
        starts = end - datetime.timedelta(days=rng.randint(30, 365))
        region = rng.choice(["51", regions.normalize_prefix(rng.choice(prefectures))])
        face = rng.choice((500, 1000, 2000, 3000, 5000))
        payload = {"title": "惠工消费券 第%d期" % (n + 1), "merchant_id": merchant["_id"], "face_value_cents": face,
                   "min_spend_cents": face * rng.choice((2, 3, 5)), "quota": 200000, "per_member_limit": 3,
                   "claim_starts_at": starts, "claim_ends_at": starts + datetime.timedelta(days=7),
                   "redeem_ends_at": starts + datetime.timedelta(days=30),
                   "eligibility": {"region_codes": [region] if region != "51" else [], "occupation_groups": [],
                                   "union_ids": []}, "welcome": False}
        doc = domain.new_campaign(payload, {"sub": "acc_admin"}, "51", merchant, starts)
        doc.update(_id=seed_id("cmp", starts, n), created_by="seed", expiry_done=True)
        campaigns.append(doc)
    ctx.insert(db.campaigns, campaigns)
    store.build_campaign_months(db, rebuild=True)  # the stats pages' counters, as creating them one by one writes
    return campaigns


def seed_id(prefix, when, n):
    """An id of the service's form (``cpn_<ObjectId>``, creation-ordered) that is the same on every run."""
    return "%s_%s" % (prefix, ObjectId(struct.pack(">IQ", int(when.timestamp()), n)))


def coupon(rng, c, user_id, n):
    claimed = c["claim_starts_at"] + datetime.timedelta(seconds=rng.randrange(7 * 86400))
    cp = domain.new_coupon(c, user_id, claimed.replace(microsecond=claimed.microsecond // 1000 * 1000))
    cp["_id"] = seed_id("cpn", claimed, n)
    if rng.random() < REDEEMED:
        cp.update(status="redeemed", redeemed_at=claimed + datetime.timedelta(days=rng.randint(0, 20)))
    else:
        cp["status"] = "expired"
    return cp

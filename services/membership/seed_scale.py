"""Membership's part of ``make seed-scale`` (``deploy/seed_scale.py`` runs it): the grassroots unions, every user
with their login history, their member records, and the member counters, shaped exactly as the service writes them
(same keyed hashes, encryption and masks, same indexes), so logins, joins and lists work on them at once.

People come from ``unionhub_kit.population`` (the same people the other services project). No events are published:
the records stand for history, and the other services load their projections the way the events built them.
"""
from unionhub_kit import clock, crypto, ids, population

from . import domain, seed, store


def run(ctx):
    db = ctx.db("membership")
    store.ensure_indexes(db)
    store.seed_unions(db, seed.region_unions())
    ctx.once(db, "unions", lambda: load_unions(ctx, db))
    for _b, people in ctx.batches(db, "users+members"):
        ctx.insert(db.users, [user_doc(p) for p in people])
        ctx.insert(db.members, [member_doc(p) for p in people if p["member"]])
    # the counters, from one pass over the members (exact whatever was interrupted and loaded again)
    ctx.once(db, "counters", lambda: store.rebuild_member_counts(
        db, ctx.progress("membership counters", int(ctx.users * population.MEMBER_SHARE), "members").add))
    # the mark a starting process looks for (store.ensure_member_counts): without it the first start on the loaded
    # store counted every member again before serving (212,365 members: over the 180 s a stack is given to start)
    db.counters.update_one({"_id": "member-counts"}, {"$set": {"state": "built", "at": clock.now()}}, upsert=True)


def load_unions(ctx, db):
    """The grassroots unions (new-employment-form ones approve at once), in bulk; the county unions' code counters
    are left below the seeded codes (5001+), so unions created through the API number from 0001."""
    now = ctx.province.epoch
    docs = []
    for n, (code, county, kind) in enumerate(ctx.province.union_docs()):
        docs.append({"_id": domain.union_id_for(code), "code": code, "level": "grassroots",
                     "name": "%s%s工会" % (county_name(county), "新就业形态第%d" % n if kind == "new_form" else
                                         "企业第%d" % n),
                     "parent_id": domain.union_id_for(county), "parent_code": county, "region_code": county,
                     "auto_approve": kind == "new_form", "uscc": ids.make_uscc("91%s%05d" % (code, n % 100000)),
                     "created_by": "seed", "created_at": now, "kind": kind})
    for k in range(0, len(docs), 2000):
        ctx.insert(db.unions, docs[k:k + 2000])
    return len(docs)


def county_name(code):
    from unionhub_kit import regions
    return regions.all_codes().get(code, code)


def user_doc(p):
    return {"_id": p["user_id"], "phone_hash": domain.phone_key(p["phone"]), "phone_enc": crypto.encrypt(p["phone"]),
            "phone_masked": ids.mask_phone(p["phone"]), "created_at": p["created_at"],
            "last_login_at": p["last_login_at"], "logins": p["logins"]}


def member_doc(p):
    m = p["member"]
    id_hash = crypto.keyed_hash(m["id_number"], "resident-id")
    doc = {"_id": m["member_id"], "user_id": p["user_id"], "union_id": m["union_id"], "union_code": m["union_code"],
           "region_code": m["region_code"], "prefecture_code": m["prefecture_code"], "status": m["status"],
           "occupation_group": m["occupation_group"], "name": m["name"], "employer": None, "id_hash": id_hash,
           "id_enc": crypto.encrypt(m["id_number"], "resident-id"), "id_masked": ids.mask_id_number(m["id_number"]),
           "phone_masked": ids.mask_phone(p["phone"]), "consent": {"version": domain.CONSENT_VERSION,
                                                                   "at": m["joined_at"]},
           "created_at": m["joined_at"], "updated_at": m["joined_at"]}
    if m["status"] in domain.LIVE_STATUSES:
        doc.update(live_id=id_hash, live_user=p["user_id"])
    if m["status"] in ("active", "left"):
        doc.update(card_no=domain.card_no(m["joined_at"].year, 50_000_000 + p["i"]), joined_at=m["joined_at"])
    if m["status"] == "left":
        doc.update(left_at=max(m["joined_at"], p["last_login_at"]))
    return doc


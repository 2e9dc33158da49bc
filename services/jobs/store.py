"""All of jobs' pymongo access, and its indexes.

Collections: ``employers``, ``jobs`` (postings), ``search_stats`` (postings per search key, for the search planner),
``resumes`` and ``members`` (a projection of membership events: the masked phone employers see) keyed by user id,
``applications``, ``fairs``, ``booths``, ``alerts`` (job alerts, keyed by user id), ``idempotency``.

Invariants are held by the store, never by read-then-write: one application per member and posting and one booth
per employer and fair are unique indexes; applying, closing, expiring and moving an application on are conditional
updates on the expected state inside the transaction that also writes the event to the outbox.
"""

import collections

import pymongo
import pymongo.errors
from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne

from unionhub_kit import mongo, projection
from unionhub_kit.errors import Conflict
from unionhub_kit.mongo import insert_unique, upsert_returning

from . import domain, search

ASC, DESC = pymongo.ASCENDING, pymongo.DESCENDING
TOP = "9" * 13  # above every order key
NO_STATS_SINCE_DAYS = 400


def open_from_env():
    """The jobs database for the command-line tools (``unionhub_kit.mongo.open_from_env``)."""
    return mongo.open_from_env("jobs")


def ensure_indexes(db):
    db.employers.create_index("uscc", unique=True)
    # ascending order_key: the store inverts every entry of a descending field (a cost at 20M+ entries); scans are
    # ranges of a window and sorted after, and MongoDB walks an ascending index backwards for a descending sort
    db.jobs.create_index([("search_keys", ASC), ("order_key", ASC)], name="search_keys_order")
    db.jobs.create_index([("status", ASC), ("valid_until", ASC)], name="expiry")
    db.jobs.create_index([("employer_id", ASC), ("order_key", DESC)], name="by_employer")
    db.applications.create_index([("job_id", ASC), ("user_id", ASC)], unique=True, name="one_per_member")
    db.applications.create_index([("user_id", ASC), ("order_key", DESC)], name="by_member")
    db.applications.create_index([("employer_id", ASC), ("order_key", DESC)], name="by_employer")
    db.applications.create_index([("employer_id", ASC), ("job_id", ASC), ("order_key", DESC)], name="by_posting")
    db.fairs.create_index([("region_prefixes", ASC), ("order_key", DESC)], name="by_region")
    db.fairs.create_index([("order_key", DESC)], name="by_start")
    db.booths.create_index([("fair_id", ASC), ("employer_id", ASC)], unique=True, name="one_per_employer")
    db.alerts.create_index("anchors", name="anchors")


def new_id():
    return str(ObjectId())


def now_ms(dt):
    return int(dt.timestamp() * 1000)


def page(docs, limit):
    """``(items, next order key)`` from up to ``limit + 1`` documents in order."""
    return docs[:limit], (docs[limit - 1]["order_key"] if len(docs) > limit else None)


def older_than(cursor):
    return {"order_key": {"$lt": search.decode_cursor(cursor)}} if cursor else {}


# ---- idempotency: unionhub_kit.idempotency.run_idempotent ------------------------------------------------------
from unionhub_kit.idempotency import run_idempotent  # noqa: E402,F401  (store.run_idempotent for the service)


# ---- employers ------------------------------------------------------------------------------------------------
def insert_employer(db, doc, session):
    insert_unique(db.employers, doc, session, Conflict("An employer with this USCC exists.", code="EMPLOYER_EXISTS"))


def employer(db, employer_id):
    return db.employers.find_one({"_id": employer_id})


# ---- postings -------------------------------------------------------------------------------------------------
def insert_job(db, doc, session):
    db.jobs.insert_one(doc, session=session)


def job(db, job_id, projection=None):
    return db.jobs.find_one({"_id": job_id}, projection)


def jobs_by_ids(db, job_ids):
    return {d["_id"]: d for d in db.jobs.find({"_id": {"$in": list(job_ids)}})}


def close_job(db, job_id, employer_id, reason, now, session):
    """Close an open posting (of ``employer_id`` when given) at once; return it as it was, or None."""
    flt = {"_id": job_id, "status": "open"}
    if employer_id is not None:
        flt["employer_id"] = employer_id
    if reason == "expired":
        flt["valid_until"] = {"$lte": now}
    return db.jobs.find_one_and_update(
        flt, {"$set": {"status": "closed", "closed_reason": reason, "closed_at": now, "search_keys": []}},
        projection={"search_keys": 1, "employer_id": 1}, return_document=ReturnDocument.BEFORE, session=session)


def due_for_expiry(db, now, limit):
    return [d["_id"] for d in db.jobs.find({"status": "open", "valid_until": {"$lte": now}}, {"_id": 1}).limit(limit)]


def employer_jobs(db, employer_id, limit, cursor):
    flt = dict({"employer_id": employer_id}, **older_than(cursor))
    return page(list(db.jobs.find(flt).sort("order_key", DESC).limit(limit + 1)), limit)


def claim_for_application(db, job_id, now, session):
    """Count an application on a posting that is open now; None when there is no such open posting."""
    return db.jobs.find_one_and_update(
        {"_id": job_id, "status": "open", "valid_until": {"$gt": now}}, {"$inc": {"applications": 1}},
        projection={"title": 1, "employer_id": 1, "employer_name": 1}, session=session)


# ---- search ---------------------------------------------------------------------------------------------------
def bump_stats(db, keys, delta, created_ms=None):
    """Keep the planner's counts of open postings per search key, and on ``*`` the time span postings were created
    in (``since``, ``latest``); estimates, written after the commit."""
    if not keys:
        return
    ops = [UpdateOne({"_id": k}, {"$inc": {"n": delta}}, upsert=True) for k in set(keys) if k != "*"]
    star = {"$inc": {"n": delta}}
    if created_ms is not None:
        star.update({"$min": {"since": created_ms}, "$max": {"latest": created_ms}})
    ops.append(UpdateOne({"_id": "*"}, star, upsert=True))
    db.search_stats.bulk_write(ops, ordered=False)


class StatsTally:
    """What ``search_stats`` holds, tallied over many postings at once (a seed, a rekey): open postings per search
    key, and the span of their creation times on ``*``."""

    def __init__(self):
        self.counts = collections.Counter()
        self.since = self.latest = None

    def add(self, keys, order_key):
        if not keys:
            return
        self.counts.update(keys)
        ms = search.order_key_ms(order_key)
        self.since = ms if self.since is None else min(self.since, ms)
        self.latest = ms if self.latest is None else max(self.latest, ms)

    def write(self, db, replace=False):
        """Add the tally to ``search_stats`` (postings inserted besides those counted already), or with ``replace``
        make it the whole of it (a full recount: keys no open posting has any more go). Returns the keys written."""
        verb = "$set" if replace else "$inc"
        ops = [UpdateOne({"_id": k}, {verb: {"n": n}}, upsert=True) for k, n in self.counts.items() if k != "*"]
        star = {verb: {"n": self.counts["*"]}}
        if self.since is not None:
            if replace:
                star["$set"].update(since=self.since, latest=self.latest)
            else:
                star.update({"$min": {"since": self.since}, "$max": {"latest": self.latest}})
        if self.counts or replace:
            ops.append(UpdateOne({"_id": "*"}, star, upsert=True))
        for k in range(0, len(ops), 5000):
            db.search_stats.bulk_write(ops[k:k + 5000], ordered=False)
        if replace:
            db.search_stats.delete_many({"_id": {"$nin": list(self.counts) + ["*"]}})
        return len(ops)


def search_jobs(db, flt, limit, cursor, now):
    """One page of open postings matching ``flt``, newest first: ``(items, next order key)``.

    See ``search``: the driving key's index range is read in time windows until a page (plus one) is found.
    """
    keys = search.query_keys(flt)
    stats = {d["_id"]: d for d in db.search_stats.find({"_id": {"$in": sorted(set(keys) | {"*"})}})}
    counts = {k: d.get("n", 0) for k, d in stats.items()}
    driver = search.choose_driver(keys, counts)
    residual = len(set(keys)) > 1 or flt.get("salary_min") is not None
    now_at = now_ms(now)
    star = stats.get("*") or {}
    since = star.get("since") or now_at - NO_STATS_SINCE_DAYS * search.DAY_MS
    latest = max(star.get("latest") or now_at, since) + 1  # nothing newer was posted (give or take a crash)
    hi = search.decode_cursor(cursor) if cursor else TOP
    want = limit + 1
    plan = search.WindowPlan(counts.get(driver, 0), search.estimate_matches(keys, counts, counts.get("*", 0)),
                             latest - since, want)
    window = plan.first() if counts.get(driver, 0) > search.WINDOW_CANDIDATES else None
    found = []
    while True:
        top_ms = min(search.order_key_ms(hi), latest)
        lo = None if window is None or top_ms - window <= since else "%013d" % (top_ms - window)
        rng = {"$lt": hi} if lo is None else {"$lt": hi, "$gte": lo}
        # whole documents: the embedded store answers slower with a projection than without one
        docs = db.jobs.find({"search_keys": driver, "order_key": rng})
        hits = [d for d in docs if d["valid_until"] > now and
                (not residual or search.matches(d, keys, flt.get("salary_min")))]
        hits.sort(key=lambda d: d["order_key"], reverse=True)
        found.extend(hits)
        if len(found) >= want or lo is None:
            break
        hi = lo
        window = plan.next(window, len(hits))
    return page(found, limit)


# ---- resumes and the member projection ------------------------------------------------------------------------
def put_resume(db, user_id, resume, now):
    doc = dict(resume, updated_at=now)
    return upsert_returning(db.resumes, {"_id": user_id}, {"$set": doc, "$setOnInsert": {"created_at": now}})


def resume(db, user_id):
    return db.resumes.find_one({"_id": user_id})


def has_resume(db, user_id):
    return db.resumes.find_one({"_id": user_id}, {"_id": 1}) is not None


def project_member(db, user_id, fields, as_of, session):
    """The member projection after a membership event (``unionhub_kit.projection``: an older event changes nothing)."""
    return projection.project_member(db.members, user_id, fields, as_of, session)


def erase_member(db, user_id, session):
    """A member who left with erasure: their phone, resume and job alert go."""
    db.members.delete_one({"_id": user_id}, session=session)
    db.resumes.delete_one({"_id": user_id}, session=session)
    db.alerts.delete_one({"_id": user_id}, session=session)


# ---- applications ---------------------------------------------------------------------------------------------
def insert_application(db, doc, session):
    insert_unique(db.applications, doc, session,
                  Conflict("You have applied to this posting already.", code="ALREADY_APPLIED"))


def application(db, application_id):
    return db.applications.find_one({"_id": application_id})


def move_application(db, application_id, employer_id, target, now, session):
    """Move an application of ``employer_id`` to ``target`` if its status allows it; the updated one, or None."""
    return db.applications.find_one_and_update(
        {"_id": application_id, "employer_id": employer_id, "status": {"$in": domain.sources_for(target)}},
        {"$set": {"status": target, "updated_at": now}, "$push": {"history": {"status": target, "at": now}}},
        return_document=ReturnDocument.AFTER, session=session)


def member_applications(db, user_id, limit, cursor):
    flt = dict({"user_id": user_id}, **older_than(cursor))
    return page(list(db.applications.find(flt, {"history": 0}).sort("order_key", DESC).limit(limit + 1)), limit)


def employer_applications(db, employer_id, job_id, status, limit, cursor):
    flt = {"employer_id": employer_id}
    if job_id:
        flt["job_id"] = job_id
    if status:
        flt["status"] = status
    flt.update(older_than(cursor))
    return page(list(db.applications.find(flt, {"history": 0}).sort("order_key", DESC).limit(limit + 1)), limit)


def applicants(db, user_ids):
    """Resumes and member records of ``user_ids`` (two queries for a whole page)."""
    ids = list(set(user_ids))
    resumes = {d["_id"]: d for d in db.resumes.find({"_id": {"$in": ids}})}
    members = {d["_id"]: d for d in db.members.find({"_id": {"$in": ids}})}
    return resumes, members


# ---- fairs ----------------------------------------------------------------------------------------------------
def insert_fair(db, doc, session):
    db.fairs.insert_one(doc, session=session)


def fair(db, fair_id):
    return db.fairs.find_one({"_id": fair_id})


def insert_booth(db, doc, now, session):
    """A booth, counted on its fair if the fair has not ended; False when it has."""
    if db.fairs.update_one({"_id": doc["fair_id"], "ends_at": {"$gt": now}}, {"$inc": {"booth_count": 1}},
                           session=session).matched_count == 0:
        return False
    insert_unique(db.booths, doc, session, Conflict("You have a booth at this fair already.", code="BOOTH_EXISTS"))
    return True


def booths(db, fair_id, limit=500):
    return list(db.booths.find({"fair_id": fair_id}).sort("created_at", ASC).limit(limit))


def list_fairs(db, region, upcoming, limit, cursor, now):
    """Fairs in a region (prefix), newest start first; ``upcoming``: those not ended yet, soonest first."""
    flt = {"region_prefixes": region} if region else {}
    if upcoming:
        flt["ends_at"] = {"$gt": now}
        if cursor:
            flt["order_key"] = {"$gt": search.decode_cursor(cursor)}
        docs = db.fairs.find(flt).sort("order_key", ASC).limit(limit + 1)
    else:
        flt.update(older_than(cursor))
        docs = db.fairs.find(flt).sort("order_key", DESC).limit(limit + 1)
    return page(list(docs), limit)


# ---- job alerts -----------------------------------------------------------------------------------------------
def put_alert(db, user_id, conditions, now):
    return upsert_returning(db.alerts, {"_id": user_id}, {"$set": dict(conditions, updated_at=now)})


def alert(db, user_id):
    return db.alerts.find_one({"_id": user_id})


def delete_alert(db, user_id):
    return db.alerts.delete_one({"_id": user_id}).deleted_count == 1


def alert_candidates(db, posting_keys, session=None):
    """Alerts anchored on one of a posting's keys (an indexed ``$in``); the caller checks each fully."""
    anchors = [k for k in posting_keys if k == "*" or k[:2] in ("r:", "c:", "w:")]
    return db.alerts.find({"anchors": {"$in": anchors}}, {"updated_at": 0}, session=session)

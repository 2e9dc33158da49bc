"""Storage of the stations service (its own database): stations, visits, the check-in window and the counters.

Collections:
  ``stations``     one document per station; ``cells`` (indexed array: its grid cell at every level, see ``geo``),
                   ``code`` (unique: the poster code), ``rev`` (see ``index``).
  ``visits``       one document per check-in (written with its ``station_visited`` event in one transaction).
  ``last_visits``  ``_id`` = user|station: the member's latest visit there, the 30-minute check-in window.
  ``revisions``    ``stations`` -> the last revision number a station write took (see ``index``).
  ``counters``     ``<key>|<YYYY-MM>`` -> visits and distinct visitors of a station (key = station id) or region
                   (``r:<code>``) in a month; ``open|r:<code>`` -> stations open in a region now.
  ``visitor_marks`` ``<key>|<YYYY-MM>|<user>``: that member was counted as a visitor there that month.
"""
from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from unionhub_kit import mongo
from unionhub_kit.mongo import update_returning

CODE_ATTEMPTS = 8


class CodeTaken(Exception):
    """The poster code drawn is in use (draw another)."""


class InWindow(Exception):
    """The member checked in at this station less than the window ago."""


def open_from_env():
    """The stations database for the command-line tools (``unionhub_kit.mongo.open_from_env``)."""
    return mongo.open_from_env("stations")


def ensure_indexes(db):
    db.stations.create_index("code", unique=True, name="poster_code")
    db.stations.create_index("cells", name="cells")
    db.stations.create_index("rev", name="by_rev")
    try:  # the revision counter exists before any write needs it (a first upsert inside two transactions races)
        db.revisions.insert_one({"_id": REV, "n": 0})
    except DuplicateKeyError:
        pass
    if db.stations.find_one({"rev": {"$exists": False}}, {"_id": 1}):  # written before revisions existed
        n = next_revs(db, 1)
        db.stations.update_many({"rev": {"$exists": False}}, {"$set": {"rev": n}})


# ---- revisions: every station write takes the next number, so a process's in-memory copy (``index``) asks for
# what changed since the number it has. Taken inside the write's transaction: two writes conflict on the counter, so
# a later number is never committed before an earlier one.
REV = "stations"


def next_revs(db, count=1, session=None):
    """Take ``count`` revision numbers; return the last (exact inside a transaction; the seed runs alone)."""
    return update_returning(db.revisions, {"_id": REV}, {"$inc": {"n": count}}, upsert=True, session=session)["n"]


def current_rev(db):
    return (db.revisions.find_one({"_id": REV}) or {}).get("n", 0)


def stations_since(db, rev):
    """Stations written after revision ``rev``."""
    return db.stations.find({"rev": {"$gt": rev}})


def new_id():
    return str(ObjectId())


# ---- stations -------------------------------------------------------------------------------------------------
def insert_station(db, doc, session):
    try:
        db.stations.insert_one(doc, session=session)
    except DuplicateKeyError:
        raise CodeTaken()


def station(db, station_id, session=None):
    return db.stations.find_one({"_id": station_id}, session=session)


def station_by_code(db, code):
    return db.stations.find_one({"code": code})


def update_station(db, station_id, changes, now, session):
    """Apply ``changes`` (an update by ``_id``: the embedded store scans the collection for a findAndModify)."""
    db.stations.update_one({"_id": station_id}, {"$set": dict(changes, updated_at=now)}, session=session)


def stations_in_cells(db, keys):
    """Every station in one of the cells ``keys`` (one level's cells: a station is in at most one of them)."""
    return list(db.stations.find({"cells": {"$in": keys}}))


# ---- counters -------------------------------------------------------------------------------------------------
def bump_open(db, deltas, session):
    """Move the open-station counters of regions (``{code: delta}``) inside the station write's transaction."""
    for code, delta in sorted(deltas.items()):
        db.counters.update_one({"_id": "open|r:" + code}, {"$inc": {"open": delta}}, upsert=True, session=session)


def open_counts(db, codes):
    return {d["_id"][len("open|r:"):]: d.get("open", 0)
            for d in db.counters.find({"_id": {"$in": ["open|r:" + c for c in codes]}})}


def month_counters(db, keys, month):
    """``{key: {"visits", "visitors"}}`` of ``keys`` (station ids or ``r:<code>``) in ``month``."""
    ids = ["%s|%s" % (k, month) for k in keys]
    return {d["key"]: d for d in db.counters.find({"_id": {"$in": ids}})}


def count_visit(db, keys, month, user_id, session):
    """One visit counted on each of ``keys`` in ``month``; a member not yet marked there is a new visitor. Two bulk
    writes (the marks, then the counters), not one round trip per key."""
    marks = db.visitor_marks.bulk_write([UpdateOne({"_id": "%s|%s|%s" % (key, month, user_id)},
                                                   {"$setOnInsert": {"month": month}}, upsert=True) for key in keys],
                                        ordered=True, session=session)
    new = set(marks.upserted_ids)  # positions of the keys where this member is a new visitor
    db.counters.bulk_write([UpdateOne({"_id": "%s|%s" % (key, month)},
                                      {"$inc": {"visits": 1, "visitors": 1 if n in new else 0},
                                       "$setOnInsert": {"key": key, "month": month}}, upsert=True)
                            for n, key in enumerate(keys)], ordered=True, session=session)


def forget_marks_before(db, month):
    """Visitor marks of months before ``month`` decide nothing any more (counters are per month)."""
    return db.visitor_marks.delete_many({"month": {"$lt": month}}).deleted_count


# ---- visits ---------------------------------------------------------------------------------------------------
def claim_window(db, user_id, station_id, visit_id, now, since, session):
    """Make ``visit_id`` the member's latest visit at the station unless there is one at or after ``since``
    (``InWindow`` then: the insert of the window's key collides with the recent one)."""
    try:
        db.last_visits.update_one({"_id": "%s|%s" % (user_id, station_id), "at": {"$lt": since}},
                                  {"$set": {"visit_id": visit_id, "at": now}}, upsert=True, session=session)
    except DuplicateKeyError:
        raise InWindow()


def last_visit(db, user_id, station_id):
    last = db.last_visits.find_one({"_id": "%s|%s" % (user_id, station_id)})
    return db.visits.find_one({"_id": last["visit_id"]}) if last else None


def insert_visit(db, doc, session):
    db.visits.insert_one(doc, session=session)


# ---- bulk writes (seed) ---------------------------------------------------------------------------------------
def insert_many(coll, docs):
    if docs:
        coll.insert_many(docs, ordered=False)


def add_counters(db, counts):
    """Add ``{counter id: {"visits": n, "visitors": n}}`` (ids ``<key>|<month>``) to the counters: inserted whole
    (upserts are ~10x slower on the embedded store), and added with ``$inc`` to those that exist already."""
    docs = [dict(inc, _id=cid, key=cid.rsplit("|", 1)[0], month=cid.rsplit("|", 1)[1]) for cid, inc in counts.items()]
    taken = []
    for k in range(0, len(docs), 5000):
        try:
            db.counters.insert_many(docs[k:k + 5000], ordered=False)
        except BulkWriteError as exc:
            taken += [e["op"] for e in exc.details["writeErrors"] if e.get("code") == 11000]
            if any(e.get("code") != 11000 for e in exc.details["writeErrors"]):
                raise
    if taken:
        db.counters.bulk_write([UpdateOne({"_id": d["_id"]}, {"$inc": {"visits": d["visits"],
                                                                        "visitors": d["visitors"]}})
                                for d in taken], ordered=False)

"""Every MongoDB access of notify, and its indexes.

Collections: ``members`` (the projection of membership's events, by user id), ``notifications`` (the inbox),
``preferences`` (by user id), ``devices``, ``dispatches`` (SMS / push messages and their delivery state),
``announcements``, ``webhooks``, ``webhook_deliveries``, plus the kit's ``idempotency``, ``outbox`` and
``processed_events``.

Concurrency: work items (dispatches, webhook deliveries, announcements) are leased with a guarded update before
they are worked on, so replicas never work on one item at once; the inbox and the dispatches carry a unique
``dedupe`` key, so a resumed fan-out or a replayed event cannot write an entry twice.
"""
import uuid
from datetime import timedelta

from pymongo import ASCENDING as ASC, DESCENDING as DESC, ReturnDocument
from pymongo.errors import OperationFailure

from unionhub_kit import clock, crypto, projection
from unionhub_kit.idempotency import run_idempotent  # noqa: F401  (store.run_idempotent for the service)
from unionhub_kit.mongo import (  # noqa: F401  (store.insert_new)
    background_timeout, insert_new, insert_new_many, transaction, update_returning, upsert_returning)

from . import domain

NO_LEASE = domain.NO_LEASE


def ensure_indexes(db):
    db.members.create_index([("union_id", ASC)])
    # a region audience streams in _id order from this one index (MongoDB merges the $in's ranges in _id order
    # instead of sorting the region's members in memory; it also answers every region_code query the single-field
    # index did, which it replaces); the embedded store answers with either index alike (Chengdu's 50,585 of 205,976
    # members: 2.46 s of store CPU with this one, 2.51 s with the older one)
    db.members.create_index([("region_code", ASC), ("_id", ASC)])
    if "region_code_1" in db.members.index_information():
        try:
            db.members.drop_index("region_code_1")
        except OperationFailure:  # another process dropped it first
            pass
    db.notifications.create_index([("dedupe", ASC)], unique=True)
    db.notifications.create_index([("user_id", ASC), ("_id", DESC)])
    db.devices.create_index([("user_id", ASC)])
    db.dispatches.create_index([("dedupe", ASC)], unique=True)
    db.dispatches.create_index([("status", ASC), ("due_at", ASC)])
    db.dispatches.create_index([("user_id", ASC), ("status", ASC)])
    db.announcements.create_index([("status", ASC), ("_id", ASC)])
    db.announcements.create_index([("keys", ASC), ("created_at", ASC)])
    db.announcements.create_index([("created_at", ASC)])  # inbox.Recent: what was written since it last looked
    db.webhooks.create_index([("owner", ASC), ("_id", DESC)])
    db.webhooks.create_index([("event_types", ASC)])
    db.webhook_deliveries.create_index([("webhook_id", ASC), ("_id", DESC)])
    db.webhook_deliveries.create_index([("status", ASC), ("due_at", ASC)])




# ---- idempotency keys: unionhub_kit.idempotency.run_idempotent ----------------------------------------------


# ---- leases ---------------------------------------------------------------------------------------------------
def claim_due(coll, now, limit, lease_seconds, owner):
    """Lease up to ``limit`` pending items whose ``due_at`` has come; return the documents this caller got.

    (No ``$or`` in these filters: the store answers a filter with ``$or`` by scanning the whole collection.)
    """
    free = {"status": "pending", "due_at": {"$lte": now}, "lease_until": {"$lt": now}}
    ids = [d["_id"] for d in coll.find(free, {"_id": 1}).sort("due_at", ASC).limit(limit)]
    if not ids:
        return []
    token = "%s:%s" % (owner, uuid.uuid4().hex[:8])
    _transactional(coll, lambda session: coll.update_many(
        dict(free, _id={"$in": ids}), {"$set": {"lease_until": now + timedelta(seconds=lease_seconds), "lease": token}},
        session=session))
    return list(coll.find({"_id": {"$in": ids}, "lease": token}))


def _transactional(coll, fn, session=None):
    """``fn(session)`` in ``session``'s transaction, or in one of its own: dispatches and webhook deliveries are
    written by transactions too (queued with their event, cancelled on erasure), and a plain write to a document a
    dead client's transaction holds would wait for it inside the store (unionhub_kit.mongo)."""
    if session is not None:
        return fn(session)
    return transaction(coll.database, fn, timeout=background_timeout())


def settle(coll, doc, update, session=None):
    """Apply ``update`` to a leased item if the lease is still ours; True when it was."""
    update = dict(update)
    update.setdefault("$unset", {})["lease"] = ""
    update.setdefault("$set", {})["lease_until"] = NO_LEASE
    return _transactional(coll, lambda session: coll.update_one({"_id": doc["_id"], "lease": doc["lease"]}, update,
                                                                session=session).matched_count == 1, session)


# ---- member projection ----------------------------------------------------------------------------------------
def project_member(db, user_id, fields, as_of, session, unset=()):
    """The member projection after a membership event (``unionhub_kit.projection``: an older event changes nothing)."""
    return projection.project_member(db.members, user_id, fields, as_of, session, unset)


def phones_of(db, user_ids, session=None):
    """user id -> encrypted phone, for the members whose phone the projection has."""
    docs = db.members.find({"_id": {"$in": list(user_ids)}, "phone_enc": {"$exists": True}},
                           {"phone_enc": 1, "phone_masked": 1}, session=session)
    return {d["_id"]: (d["phone_enc"], d.get("phone_masked")) for d in docs}


def union_codes(db, union_ids):
    """union id -> its code, as far as the projection has seen the union."""
    out = {}
    for uid in union_ids:
        doc = db.members.find_one({"union_id": uid}, {"union_code": 1})
        out[uid] = doc["union_code"] if doc else None
    return out


def erase_member(db, user_id, session):
    """A member left and asked for erasure: drop what notify holds about them."""
    db.notifications.delete_many({"user_id": user_id}, session=session)
    db.devices.delete_many({"user_id": user_id}, session=session)
    db.preferences.delete_one({"_id": user_id}, session=session)
    db.dispatches.update_many({"user_id": user_id, "status": "pending"},
                              {"$set": {"status": "cancelled"}, "$unset": {"to_enc": "", "params": "", "text": ""}},
                              session=session)


AUDIENCE_INDEXED = ("region_code", "union_id")  # the members' indexed fields an audience query may name


def audience_stream(db, query, batch, after=None, skip=None):
    """A cursor over the audience's user ids in ``_id`` order (read in ``batch``-sized batches), after the member id
    ``after`` (a fan-out continued from its checkpoint: ``{"_id": {"$gt": after}}`` joins the query).

    An audience that names no indexed field (the province, a group) walks the ``_id`` index (``hint("_id_")``):
    MongoDB scans it from ``after`` on and filters, streaming, where it would otherwise sort the whole audience
    (7.5 million at most) in memory; SecantusDB 0.7 walks its id order instead of sorting in Python, 8.5 s of store
    CPU at 200,000 members against 39.4 s unhinted (7.6 s in natural order); ``deploy/store.py`` makes that walk
    give up the store's lock as it goes (it held it throughout, and every write of the store waited: 1.5-4.9 s at
    206,000 members). An audience by region is read from the ``{region_code, _id}`` index (MongoDB: the regions'
    ranges merged in ``_id`` order, streaming; SecantusDB: the region's members sorted, 3.1 s at 5,465 of 200,000
    members against 20.9 s hinted to ``_id_`` and 2.0 s in natural order), one by union from ``union_id``'s and
    sorted. Figures: a scratch probe, ``nice -n 19``, load 9-12, store CPU to the first batch; see the commits.

    ``skip``: an announcement checkpointed by a count in natural order, before the ids were, finishes in that order
    (``fanout``)."""
    if skip is not None:
        return db.members.find(query, {"_id": 1}, batch_size=batch, skip=skip)
    if after is not None:
        assert "_id" not in query, query
        query = dict(query, _id={"$gt": after})
    cursor = db.members.find(query, {"_id": 1}, batch_size=batch).sort("_id", ASC)
    if not any(field in query for field in AUDIENCE_INDEXED):
        cursor = cursor.hint("_id_")
    return cursor


def member(db, user_id):
    return db.members.find_one({"_id": user_id})


# ---- inbox ----------------------------------------------------------------------------------------------------
def add_notifications_once(db, docs):
    """Inbox entries, each at most once by its ``dedupe`` key (outside any transaction); returns ``{dedupe: _id}``
    of the entries that existed already (the ids their messages must name)."""
    skipped = insert_new_many(db.notifications, docs)
    if not skipped:
        return {}
    keys = [docs[i]["dedupe"] for i in skipped]
    return {d["dedupe"]: d["_id"] for d in db.notifications.find({"dedupe": {"$in": keys}}, {"dedupe": 1})}


def add_dispatches_once(db, docs):
    """SMS / push messages, each at most once by its ``dedupe`` key (outside any transaction)."""
    insert_new_many(db.dispatches, docs)


def add_notifications(db, docs, session):
    if docs:
        db.notifications.insert_many(docs, session=session)


def list_notifications(db, user_id, unread, after, limit):
    q = {"user_id": user_id}
    if unread is True:
        q["read"] = False
    elif unread is False:
        q["read"] = True
    if after is not None:
        q["_id"] = {"$lt": after}
    return list(db.notifications.find(q).sort("_id", DESC).limit(limit + 1))


def mark_read(db, user_id, notification_id, now):
    """The member's entry, marked read; None when there is no such entry of theirs."""
    return update_returning(db.notifications, {"_id": notification_id, "user_id": user_id},
                            {"$set": {"read": True, "read_at": now}})


ANNOUNCEMENT_WINDOWS = (timedelta(days=60), timedelta(days=365), timedelta(days=3650))


def announcements_for(db, keys, below, since, limit):
    """Up to ``limit`` announcements found by any of ``keys``, newest first, with ids below ``below`` (a cursor;
    None: from the newest) and from ``since`` (an id; None: from the first).

    Read in widening windows of ``created_at`` back from the cursor (two months, a year, ten years), one
    query per key and window on the ``(keys, created_at)`` index: the embedded store fetches every match of a query
    before it sorts and limits, so reading all of a member's announcements for each page (a year: ~180 of them,
    86-168 ms under load) is what the windows avoid."""
    top = domain.time_of_id(below) if below else clock.CLOCK.now() + timedelta(days=1)
    floor = domain.time_of_id(since) if since else None
    fields = {"title": 1, "body": 1, "audience": 1, "scope": 1, "created_at": 1}
    found, hi = {}, top + timedelta(milliseconds=1)
    for span in ANNOUNCEMENT_WINDOWS:
        lo = max(top - span, floor) if floor else top - span
        for key in keys:
            for d in db.announcements.find({"keys": key, "created_at": {"$gte": lo, "$lt": hi}}, fields):
                if (below is None or d["_id"] < below) and (since is None or d["_id"] >= since):
                    found[d["_id"]] = d
        if len(found) >= limit or (floor and lo <= floor):
            break
        hi = lo
    return sorted(found.values(), key=lambda d: d["_id"], reverse=True)[:limit]


def announcements_since(db, when):
    """The announcements created from ``when`` on, the fields an inbox shows and checks (on the ``created_at``
    index: the embedded store answers a range of ``_id`` with a collection scan, 2,473 documents, 166 ms)."""
    return list(db.announcements.find({"created_at": {"$gte": when}}, {"title": 1, "body": 1, "audience": 1,
                                                                      "scope": 1, "created_at": 1, "keys": 1}))


def announcement_before(db, when):
    """Whether any announcement was created before ``when``."""
    return db.announcements.find_one({"created_at": {"$lt": when}}, {"_id": 1}) is not None


def read_announcements(db, user_id, announcement_ids):
    """Which of ``announcement_ids`` the member has read (one point lookup each, in one query)."""
    keys = ["%s:%s" % (a, user_id) for a in announcement_ids]
    return {d["announcement_id"] for d in db.announcement_reads.find({"_id": {"$in": keys}}, {"announcement_id": 1})}


def mark_announcement_read(db, user_id, announcement_id, now):
    db.announcement_reads.update_one({"_id": "%s:%s" % (announcement_id, user_id)},
                                     {"$setOnInsert": {"announcement_id": announcement_id, "user_id": user_id,
                                                       "at": now}}, upsert=True)


def count_pushes(db, announcement_id, n, session):
    """``n`` more device tokens of the announcement handed to the push provider."""
    db.announcements.update_one({"_id": announcement_id}, {"$inc": {"pushes": n}}, session=session)


# ---- preferences and devices ----------------------------------------------------------------------------------
def preferences(db, user_id):
    return db.preferences.find_one({"_id": user_id})


def preferences_of(db, user_ids, session=None):
    return {d["_id"]: d for d in db.preferences.find({"_id": {"$in": list(user_ids)}}, session=session)}


def update_preferences(db, user_id, fields, now):
    return upsert_returning(db.preferences, {"_id": user_id}, {"$set": dict(fields, updated_at=now)})


def register_device(db, user_id, platform, token, now, session):
    """One document per (platform, token): registering a known token moves it to this member."""
    _id = crypto.keyed_hash("%s:%s" % (platform, token), "device")[:32]
    return db.devices.find_one_and_update(
        {"_id": _id}, {"$set": {"user_id": user_id, "platform": platform, "token": token, "updated_at": now},
                       "$setOnInsert": {"created_at": now}},
        upsert=True, return_document=ReturnDocument.AFTER, session=session)


def devices_of(db, user_ids, session=None):
    return list(db.devices.find({"user_id": {"$in": list(user_ids)}}, session=session))


def delete_device(db, user_id, device_id):
    """Unregister one of the member's devices; False when the member has no such device."""
    return db.devices.delete_one({"_id": device_id, "user_id": user_id}).deleted_count == 1


# ---- dispatches (SMS / push) ----------------------------------------------------------------------------------
def add_dispatches(db, docs, session):
    if docs:
        db.dispatches.insert_many(docs, session=session)


def add_dispatch_record(db, doc, session=None):
    db.dispatches.insert_one(doc, session=session)


def dispatch(db, _id):
    return db.dispatches.find_one({"_id": _id})


# ---- announcements --------------------------------------------------------------------------------------------
def add_announcement(db, doc, session):
    db.announcements.insert_one(doc, session=session)


def announcement(db, _id):
    return db.announcements.find_one({"_id": _id})


def claim_announcement(db, now, lease_seconds, owner):
    """Lease the oldest unfinished announcement that nobody else holds (or that this worker holds already);
    return it as it was before the claim, or None."""
    lease = {"$set": {"lease_until": now + timedelta(seconds=lease_seconds), "lease_owner": owner}}
    unfinished = {"$in": ["pending", "running"]}
    for doc in db.announcements.find({"status": unfinished}, {"_id": 1}).sort("_id", ASC).limit(50):
        for guard in ({"lease_owner": owner}, {"lease_until": {"$lt": now}}):
            before = db.announcements.find_one_and_update(dict(guard, _id=doc["_id"], status=unfinished), lease,
                                                          return_document=ReturnDocument.BEFORE)
            if before is not None:
                return before
    return None


def start_announcement(db, _id, owner, now):
    return db.announcements.update_one(
        {"_id": _id, "lease_owner": owner, "status": "pending"},
        {"$set": {"status": "running", "started_at": now}}).matched_count == 1


def checkpoint_announcement(db, _id, owner, scanned, batches, lease_until, last_id=None):
    """Record progress after a batch (the audience counted so far sees it in the inbox: recipients and delivered)
    and the last member id counted (``last_id``: the next run continues after it); False if the lease was lost
    (another replica took over)."""
    progress = {"scanned": scanned, "batches": batches, "recipients": scanned, "delivered": scanned,
                "lease_until": lease_until}
    if last_id is not None:
        progress["last_id"] = last_id
    return db.announcements.update_one({"_id": _id, "lease_owner": owner}, {"$set": progress}).matched_count == 1


def finish_announcement(db, _id, owner, now):
    return db.announcements.update_one(
        {"_id": _id, "lease_owner": owner},
        {"$set": {"status": "done", "finished_at": now, "lease_until": NO_LEASE}}).matched_count == 1


# ---- webhooks -------------------------------------------------------------------------------------------------
def add_webhook(db, doc, session):
    db.webhooks.insert_one(doc, session=session)


def webhook(db, _id):
    return db.webhooks.find_one({"_id": _id})


def list_webhooks(db, owner, after, limit):
    q = {"owner": owner}
    if after is not None:
        q["_id"] = {"$lt": after}
    return list(db.webhooks.find(q).sort("_id", DESC).limit(limit + 1))


def delete_webhook(db, owner, _id):
    return db.webhooks.delete_one({"_id": _id, "owner": owner}).deleted_count == 1


def webhooks_for(db, event_type, session=None):
    return list(db.webhooks.find({"event_types": event_type}, session=session))


def webhook_event_types(db):
    """Every event type some webhook subscribes to."""
    types = set()
    for hook in db.webhooks.find({}, {"event_types": 1}):
        types.update(hook.get("event_types") or ())
    return types


def subscribed_types(db, event_types):
    """Which of ``event_types`` any webhook subscribes to (one indexed query for a batch of events)."""
    wanted = set(event_types)
    found = set()
    for hook in db.webhooks.find({"event_types": {"$in": list(wanted)}}, {"event_types": 1}):
        found.update(t for t in hook["event_types"] if t in wanted)
    return found


def add_deliveries(db, docs, session):
    if docs:
        db.webhook_deliveries.insert_many(docs, session=session)


def webhook_secret(hook):
    return crypto.decrypt(hook["secret_enc"], "webhook-secret")


def list_deliveries(db, webhook_id, status, after, limit):
    q = {"webhook_id": webhook_id}
    if status:
        q["status"] = status
    if after is not None:
        q["_id"] = {"$lt": after}
    return list(db.webhook_deliveries.find(q).sort("_id", DESC).limit(limit + 1))


def replay_delivery(db, webhook_id, delivery_id, now):
    """Send one delivery again from scratch (its attempts start over); None if the webhook has no such delivery."""
    return transaction(db, lambda session: db.webhook_deliveries.find_one_and_update(
        {"_id": delivery_id, "webhook_id": webhook_id},
        {"$set": {"status": "pending", "attempts": 0, "due_at": now, "lease_until": NO_LEASE},
         "$unset": {"lease": ""}, "$inc": {"replays": 1}},
        return_document=ReturnDocument.AFTER, session=session))


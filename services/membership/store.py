"""All of membership's MongoDB access.

Collections: ``unions``, ``accounts`` (staff, merchants, employers, integrators), ``users`` (members' phone
accounts), ``otps`` (login codes, keyed by the phone's keyed hash), ``otp_clients`` (login codes sent per client
address and minute, keyed by the address's keyed hash and the minute), ``logins`` (wrong staff passwords in a row,
lock-outs), ``members``,
``transfers``, ``counters``, ``idempotency``, ``sessions`` (one per login: its refresh token's keyed hash, the
spent ones), ``revocations`` (ended logins and accounts, for the gateways) and the kit's ``outbox`` /
``processed_events``.

Uniqueness is enforced by the store, never by read-then-write: a live membership (pending or active) carries
``live_id`` (the keyed hash of the ID number) and ``live_user``, both under unique partial indexes; a pending
transfer carries ``live_member``. State changes are conditional updates on the expected state.
"""
import logging
import re
from datetime import datetime, timedelta, timezone

import pymongo
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from unionhub_kit import clock
from unionhub_kit.errors import Conflict
from unionhub_kit.mongo import background_timeout, insert_unique, transaction, update_returning, upsert_returning

from . import domain

ASC = pymongo.ASCENDING
log = logging.getLogger("unionhub.membership")


def _exists(field):
    return {field: {"$exists": True}}


def unique_when_present(coll, field):
    """A unique index over ``field`` that leaves out documents without it (an erased phone, a membership that is no
    longer live), as a SPARSE index.

    It used to be a partial index ``{field: {$exists: true}}``, which means the same, but the embedded store's planner
    cannot prove that ``{field: value}`` implies ``$exists`` and so never used it: every login's
    ``users.find({phone_hash})`` and every ``GET /members/me``'s ``members.find({live_user})`` scanned the whole
    collection (explain: COLLSCAN, 20,000 documents examined; 368 ms per lookup at 20,000 users, and growing with every
    account). An index of the old form is replaced (same name, other options: the store refuses to create it)."""
    name = field + "_1"
    try:
        coll.create_index(field, unique=True, sparse=True, name=name)
    except OperationFailure as exc:
        if exc.code not in (85, 86):  # IndexOptionsConflict / IndexKeySpecsConflict: the old partial form
            raise
        coll.drop_index(name)
        coll.create_index(field, unique=True, sparse=True, name=name)


def ensure_indexes(db):
    db.unions.create_index("code", unique=True)
    db.unions.create_index("uscc", unique=True, partialFilterExpression=_exists("uscc"))
    db.unions.create_index([("parent_code", ASC), ("code", ASC)])
    db.unions.create_index([("level", ASC), ("code", ASC)])
    db.accounts.create_index("username", unique=True)
    unique_when_present(db.users, "phone_hash")
    unique_when_present(db.members, "live_id")
    unique_when_present(db.members, "live_user")
    db.members.create_index([("user_id", ASC), ("_id", ASC)])
    db.members.create_index([("union_code", ASC), ("_id", ASC)])
    db.members.create_index([("created_at", ASC)])
    db.members.create_index([("prefecture_code", ASC), ("created_at", ASC)])
    db.members.create_index([("region_code", ASC), ("created_at", ASC)])
    db.members.create_index([("union_id", ASC), ("_id", ASC)])
    unique_when_present(db.transfers, "live_member")
    db.transfers.create_index([("to_union_code", ASC), ("_id", ASC)])
    db.otps.create_index("last_sent", name="stale_otps")
    db.member_counts.create_index([("scope", ASC), ("group_by", ASC), ("status", ASC)])
    db.member_counts.create_index([("group_by", ASC), ("status", ASC), ("union_code", ASC)])
    db.otp_clients.create_index("last_sent")
    db.logins.create_index("last_failure")
    db.sessions.create_index("sub")
    db.sessions.create_index("expires_at")
    db.revocations.create_index("at")


# ---- idempotency: unionhub_kit.idempotency.run_idempotent ------------------------------------------------------
from unionhub_kit.idempotency import run_idempotent  # noqa: E402,F401  (store.run_idempotent for the service)


# ---- unions -----------------------------------------------------------------------------------------------------
def seed_unions(db, docs):
    """Upsert the region unions that are missing or differ, in one bulk write (concurrent replicas may race on an
    insert: retried once). Unchanged ones are not written: a process starting after one killed inside a
    transaction (which may hold a region union's ``child_seq``) does not wait behind it."""
    stored = {u["_id"]: u for u in db.unions.find({"_id": {"$in": [d["_id"] for d in docs]}})}
    changed = [d for d in docs if d["_id"] not in stored or any(stored[d["_id"]].get(k) != v for k, v in d.items())]
    ops = [UpdateOne({"_id": d["_id"]}, {"$set": d, "$setOnInsert": {"auto_approve": False, "child_seq": 0}},
                     upsert=True) for d in changed]
    for attempt in (1, 2):
        if not ops:
            return
        try:
            transaction(db, lambda session: db.unions.bulk_write(ops, ordered=False, session=session),
                        timeout=background_timeout())
            return
        except BulkWriteError:
            if attempt == 2:
                raise


def union(db, union_id):
    return db.unions.find_one({"_id": union_id})


def union_code_exists(db, code):
    return db.unions.count_documents({"code": code}, limit=1) > 0


def union_names(db, union_ids):
    return {u["_id"]: u["name"] for u in db.unions.find({"_id": {"$in": list(union_ids)}}, {"name": 1})}


def list_unions(db, parent_code=None, level=None, after=None, limit=20):
    q = {}
    if parent_code:
        q["parent_code"] = parent_code
    if level:
        q["level"] = level
    if after:
        q["code"] = {"$gt": after}
    return list(db.unions.find(q).sort("code", ASC).limit(limit + 1))


def next_child_seq(db, parent_id, session):
    doc = update_returning(db.unions, {"_id": parent_id}, {"$inc": {"child_seq": 1}}, {"child_seq": 1}, session=session)
    return doc["child_seq"]


def insert_union(db, doc, session):
    insert_unique(db.unions, doc, session,
                  Conflict("A union with this unified social credit code exists.", code="USCC_TAKEN"), ("uscc",))


# ---- accounts and users -----------------------------------------------------------------------------------------
def ensure_account(db, doc):
    """Create ``doc`` unless an account with its id exists (idempotent; safe when replicas start together)."""
    try:  # a transaction (accounts are also written by transactions: see unionhub_kit.mongo)
        transaction(db, lambda session: db.accounts.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True,
                                                               session=session))
    except DuplicateKeyError:
        pass


def account_exists(db, account_id):
    return db.accounts.count_documents({"_id": account_id}, limit=1) > 0


def set_password_hash(db, account_id, old_hash, new_hash):
    """Replace a password hash (rehash on login), unless it changed meanwhile."""
    transaction(db, lambda session: db.accounts.update_one({"_id": account_id, "password_hash": old_hash},
                                                           {"$set": {"password_hash": new_hash}}, session=session))


def account_by_id(db, account_id):
    return db.accounts.find_one({"_id": account_id})


def account_by_username(db, username):
    return db.accounts.find_one({"username": username})


def insert_account(db, doc, session):
    insert_unique(db.accounts, doc, session, Conflict("The username is taken.", code="USERNAME_TAKEN"), ("username",))


def user_for_phone(db, phone_hash, new_doc):
    """The user with this phone, created from ``new_doc`` on first login."""
    now = clock.now()
    for _ in range(2):
        try:
            return update_returning(db.users, {"phone_hash": phone_hash},
                                    {"$setOnInsert": new_doc, "$set": {"last_login_at": now}}, upsert=True)
        except DuplicateKeyError:  # a concurrent first login inserted it: the next round finds it
            continue
    return db.users.find_one({"phone_hash": phone_hash})


def user(db, user_id):
    return db.users.find_one({"_id": user_id})


def erase_user(db, user_id, session):
    db.users.update_one({"_id": user_id}, {"$unset": {"phone_hash": "", "phone_enc": "", "phone_masked": ""},
                                           "$set": {"erased_at": clock.now()}}, session=session)


# ---- login codes ------------------------------------------------------------------------------------------------
NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)  # pads ``sent`` to OTP_PER_HOUR entries


def _push_sent(times):
    """``sent`` keeps the OTP_PER_HOUR latest send times, oldest first (NEVER pads a phone sent fewer)."""
    return {"$push": {"sent": {"$each": list(times), "$sort": 1, "$slice": -domain.OTP_PER_HOUR}}}


def claim_otp(db, key, code_hash, now):
    """Store a new code for the phone ``key`` if its rate limits allow; False when they do not.

    The limits are the filter of one conditional update: no code sent in the last minute, and fewer than
    ``OTP_PER_HOUR`` sent in the last hour. ``sent`` always holds OTP_PER_HOUR times, oldest first, padded with
    NEVER, so ``sent.0`` is the OTP_PER_HOUR-th latest send and the hourly limit is ``sent.0 <= an hour ago``.

    The filter is field clauses beside ``_id`` and nothing else: with the hourly limit written as an ``$or`` (no
    record yet filled, or its oldest an hour old) the embedded store could not use ``_id`` and scanned every phone's
    record on every request (explain: COLLSCAN; 140 ms at 20,000 phones, the login slowdown with
    ``users.phone_hash``; see ``unique_when_present``).
    """
    minute_ago = now - timedelta(seconds=domain.OTP_MIN_INTERVAL_SECONDS)
    hour_ago = now - timedelta(hours=1)
    allowed = {"_id": key, "sent": {"$not": {"$gt": minute_ago}}, "sent.0": {"$lte": hour_ago}}
    fresh = {"code_hash": code_hash, "expires_at": now + timedelta(seconds=domain.OTP_TTL_SECONDS), "tries": 0,
             "last_sent": now}
    update = dict(_push_sent([now]), **{"$set": fresh})
    if db.otps.update_one(allowed, update).matched_count:
        return True
    try:
        db.otps.insert_one(dict(fresh, _id=key, sent=[NEVER] * (domain.OTP_PER_HOUR - 1) + [now]))
        return True
    except DuplicateKeyError:  # the phone has a record that the limits refused (or one appeared meanwhile)
        _pad_sent(db, key)  # a record written before the padding is judged by the same rule
    return db.otps.update_one(allowed, update).matched_count == 1


def _pad_sent(db, key):
    """Pad a ``sent`` shorter than OTP_PER_HOUR (records written before the padding; a released send) with NEVER.
    Idempotent: on a full ``sent`` the padding sorts below every time and is sliced off."""
    short = {"_id": key, "sent.%d" % (domain.OTP_PER_HOUR - 1): {"$exists": False}}
    return db.otps.update_one(short, _push_sent([NEVER] * domain.OTP_PER_HOUR)).modified_count == 1


def _minute(t):
    return int(t.timestamp()) // 60


def _client_bucket(key, minute):
    return "%s|%010d" % (key, minute)


def claim_client_slot(db, key, now, per_hour):
    """Count one login code for the client address ``key``; None when counted, else the seconds until a slot of
    the hour frees up (for Retry-After).

    Counted per minute (``otp_clients``: one small document per address and minute, ``{n}``): the minute's count
    goes up by one (a point upsert), then the last 60 minutes' documents (one ``_id`` range read of at most 60)
    are summed; over ``per_hour`` the count is taken back and the code refused. A send counts for 59-60 minutes.
    Each request costs the same however many codes the address was sent: the previous record held every send time
    of the hour in one array that each request rewrote (147 ms a code at 3,000 sends from one address, 6 ms at 20,
    measured on the embedded store), and every benchmark or NAT address with a raised limit paid that. Concurrent
    requests may both see the other's count and both be refused at the limit, never both admitted over it."""
    minute = _minute(now)
    db.otp_clients.update_one({"_id": _client_bucket(key, minute)}, {"$inc": {"n": 1}, "$set": {"last_sent": now}},
                              upsert=True)
    counts = sorted((int(d["_id"].rsplit("|", 1)[1]), d.get("n", 0)) for d in db.otp_clients.find(
        {"_id": {"$gt": _client_bucket(key, minute - 60), "$lte": _client_bucket(key, minute)}}, {"n": 1}))
    total = sum(n for _, n in counts)
    if total <= per_hour:
        return None
    release_client_slot(db, key, now)
    # the slot frees when enough of the oldest minutes have left the hour
    over = total - per_hour
    for m, n in counts:
        over -= n
        if over <= 0:
            return domain.seconds_until(datetime.fromtimestamp((m + 60) * 60, timezone.utc), now)
    return 3600


def release_client_slot(db, key, sent_at):
    """Undo ``claim_client_slot`` (the code was not sent after all)."""
    db.otp_clients.update_one({"_id": _client_bucket(key, _minute(sent_at))}, {"$inc": {"n": -1}})


# ---- staff password lock-out ------------------------------------------------------------------------------------
def login_locked_until(db, username, now):
    """When the lock-out of ``username`` ends, or None when it is not locked."""
    doc = db.logins.find_one({"_id": username, "locked_until": {"$gt": now}}, {"locked_until": 1})
    return doc["locked_until"] if doc else None


def login_failed(db, username, now, max_failures, lock_seconds):
    """Count a wrong password in a row; the ``max_failures``-th locks the username for ``lock_seconds``."""
    update = {"$inc": {"failures": 1}, "$set": {"last_failure": now}}
    try:
        doc = update_returning(db.logins, {"_id": username}, update, upsert=True)
    except DuplicateKeyError:  # a concurrent first failure created it: count on that one
        doc = update_returning(db.logins, {"_id": username}, update)
    if doc["failures"] >= max_failures:
        db.logins.update_one({"_id": username, "failures": {"$gte": max_failures}},
                             {"$set": {"failures": 0, "locked_until": now + timedelta(seconds=lock_seconds)}})


def login_succeeded(db, username):
    db.logins.delete_one({"_id": username, "failures": {"$gt": 0}})


def release_otp(db, key, code_hash, sent_at):
    """Undo ``claim_otp`` when the SMS could not be handed over (the attempt does not count)."""
    db.otps.update_one({"_id": key, "code_hash": code_hash},
                       {"$unset": {"code_hash": "", "expires_at": ""}, "$pull": {"sent": sent_at}})
    _pad_sent(db, key)


def spend_try(db, key, now):
    """Count one try of the phone's live code; None when there is none (never sent, expired, used, or dead)."""
    return update_returning(
        db.otps, {"_id": key, "code_hash": {"$exists": True}, "expires_at": {"$gt": now},
                  "tries": {"$lt": domain.OTP_MAX_TRIES}}, {"$inc": {"tries": 1}}, {"code_hash": 1})


def consume_otp(db, key, code_hash):
    """Use the code up; False if a concurrent request used it first."""
    return db.otps.update_one({"_id": key, "code_hash": code_hash},
                              {"$unset": {"code_hash": "", "expires_at": ""}}).modified_count == 1


def purge_stale_otps(db, now):
    """Delete the login-code records of phones that were sent nothing for an hour: their code expired long ago and
    the rate limits only count the last hour, so they carry nothing. Returns how many went."""
    hour_ago = now - timedelta(hours=1)
    db.otp_clients.delete_many({"last_sent": {"$lt": hour_ago}})
    purge_sessions(db, now)
    db.logins.delete_many({"last_failure": {"$lt": hour_ago}, "locked_until": {"$not": {"$gt": now}}})
    return db.otps.delete_many({"last_sent": {"$lt": hour_ago}}).deleted_count


# ---- members ----------------------------------------------------------------------------------------------------
def next_card_seq(db, year):
    """The next card sequence number of ``year``: an atomic increment outside any transaction, so concurrent
    activations do not conflict on one hot counter (a number left unused by a failed transaction is a gap)."""
    return upsert_returning(db.counters, {"_id": "card-%d" % year}, {"$inc": {"seq": 1}})["seq"]


def insert_member(db, doc, session):
    insert_unique(db.members, doc, session,
                  Conflict("This person is already a member (or has applied).", code="ALREADY_MEMBER"),
                  ("live_id", "live_user"))


def member(db, member_id):
    return db.members.find_one({"_id": member_id})


def live_member_of(db, user_id):
    return db.members.find_one({"live_user": user_id})


def latest_member_of(db, user_id):
    docs = list(db.members.find({"user_id": user_id}).sort("_id", pymongo.DESCENDING).limit(1))
    return docs[0] if docs else None


def activate(db, member_id, card_no, now, session):
    """pending -> active with a card number; None unless the member was pending."""
    return update_returning(
        db.members, {"_id": member_id, "status": "pending"},
        {"$set": {"status": "active", "card_no": card_no, "joined_at": now, "updated_at": now}},
        session=session)


def reject(db, member_id, reason, now, session):
    """pending -> rejected (the person may apply again); None unless the member was pending."""
    return update_returning(
        db.members, {"_id": member_id, "status": "pending"},
        {"$set": {"status": "rejected", "reject_reason": reason, "updated_at": now},
         "$unset": {"live_id": "", "live_user": ""}},
        session=session)


def leave(db, member_id, now, session):
    """pending/active -> left; None unless the membership was live."""
    return update_returning(
        db.members, {"_id": member_id, "status": {"$in": list(domain.LIVE_STATUSES)}},
        {"$set": {"status": "left", "left_at": now, "updated_at": now}, "$unset": {"live_id": "", "live_user": ""}},
        session=session)


def erase_members(db, user_id, session):
    """Erase the personal data of every membership record of ``user_id``."""
    db.members.update_many({"user_id": user_id},
                           {"$unset": {"name": "", "id_hash": "", "id_enc": "", "id_masked": "", "employer": "",
                                       "phone_masked": ""},
                            "$set": {"erased": True, "erased_at": clock.now()}}, session=session)


def move_member(db, member_id, from_union_id, union, now, session):
    """Move an active member from ``from_union_id`` to ``union``; None if it is no longer there and active."""
    return update_returning(
        db.members, {"_id": member_id, "status": "active", "union_id": from_union_id},
        {"$set": {"union_id": union["_id"], "union_code": union["code"], "region_code": union["region_code"],
                  "prefecture_code": union["region_code"][:4] + "00", "updated_at": now}},
        session=session)


def list_members(db, prefix=None, union_id=None, status=None, after=None, limit=20):
    """Up to ``limit + 1`` members of a union (``union_id``) or an organisation prefix, oldest first, after the
    keyset ``after`` (``(created_at, _id)``; None: from the first).

    The embedded store fetches every index match of a query before it sorts and limits, so a deep page of a large
    scope is read through bounded windows of ``created_at``: the members' monthly counters say how many joined each
    month in the scope (empty months are skipped), and a month is read in windows that hold about a page each
    (indexes ``(prefecture_code|region_code, created_at)``, ``created_at``). A grassroots union (a few hundred) is
    read whole on its index."""
    after = after or (None, "")
    if union_id or (prefix and len(prefix) > 6):
        q = {"union_id": union_id or domain.union_id_for(prefix)}
        if status:
            q["status"] = status
        return _after(list(db.members.find(q)), after)[:limit + 1]
    scope = {2: {}, 4: {"prefecture_code": prefix + "00"}, 6: {"region_code": prefix}}[len(prefix)]
    months = month_counts(db, prefix, status)
    out = []
    for month, n in months:
        lo, hi = domain.month_bounds(month)
        if after[0] is not None and hi <= after[0]:
            continue
        parts = max(1, (n * 2) // (limit + 1))  # windows of about half a page each
        step = (hi - lo) / parts
        for k in range(parts):
            w_lo, w_hi = lo + step * k, (lo + step * (k + 1)) if k < parts - 1 else hi
            if after[0] is not None and w_hi <= after[0]:
                continue
            q = dict({"created_at": {"$gte": w_lo, "$lt": w_hi}}, **scope)
            docs = [d for d in db.members.find(q) if not status or d["status"] == status]
            out += _after(docs, after)
            if len(out) > limit:
                return out[:limit + 1]
    return out


def _after(docs, after):
    docs.sort(key=lambda d: (d["created_at"], d["_id"]))
    if after[0] is None:
        return docs
    return [d for d in docs if (d["created_at"], d["_id"]) > after]


def month_counts(db, prefix, status):
    """``[(month, members who joined then)]`` in scope, oldest first, of ``status`` (None: any); the current month
    always (its joins may not be folded into the counters yet)."""
    q = {"scope": prefix, "group_by": "month"}
    if status:
        q["status"] = status
    counts = {}
    counters, deltas = _counters_and_deltas(db, q)
    for c in counters:
        counts[c["key"]] = counts.get(c["key"], 0) + c["n"]
    for d in deltas:
        for key, delta in d["incs"]:
            st, sc, g, month = key.split("|", 3)
            if sc == prefix and g == "month" and (not status or st == status):
                counts[month] = counts.get(month, 0) + delta
    counts.setdefault(domain.month_of(clock.now()), 1)
    return sorted((m, n) for m, n in counts.items() if n > 0)


# ---- member counters (GET /admin/stats/members) ------------------------------------------------------------------
# Every change of a member's status writes its counter changes as one ``member_count_deltas`` document in the
# change's own transaction (an insert: concurrent joins never contend on a hot counter there); ``fold_count_deltas``
# (a timer) adds them into ``member_counts`` and deletes them in one transaction. Statistics read the counters of
# one scope and grouping, plus the few deltas not folded yet: exact, and no scan of the members.
def count_member(db, member, changes, session):
    """``changes``: ``[(status, +1/-1)]``: the member counted in (or out of) each status."""
    incs = [[k, d] for status, delta in changes for k, d in domain.count_changes(member, status, delta)]
    db.member_count_deltas.insert_one({"incs": incs}, session=session)


class _Folded(Exception):
    """Another process folded some of these deltas first."""


def fold_count_deltas(db, limit=2000):
    """Add up to ``limit`` deltas into the counters; returns how many were folded (0 when another process did)."""
    docs = list(db.member_count_deltas.find({}).limit(limit))
    if not docs:
        return 0
    sums = {}
    for d in docs:
        for key, delta in d["incs"]:
            sums[key] = sums.get(key, 0) + delta
    ids = [d["_id"] for d in docs]

    def txn(session):
        if db.member_count_deltas.delete_many({"_id": {"$in": ids}}, session=session).deleted_count != len(ids):
            raise _Folded()
        ops = [UpdateOne({"_id": k}, {"$inc": {"n": v}, "$setOnInsert": domain.counter_fields(k)}, upsert=True)
               for k, v in sums.items() if v]
        if ops:
            db.member_counts.bulk_write(ops, ordered=False, session=session)
    try:
        transaction(db, txn)
    except _Folded:
        return 0
    return len(ids)


def count_members(db, prefix, status, group_by):
    """``[(key, count)]`` of the members in scope ``prefix`` (a region prefix or a union's code) as ``status``,
    grouped by ``group_by``: from the counters (a union's own members: counted on its index, a few hundred)."""
    if len(prefix) > 6:  # one grassroots union
        field = domain.stats_key(group_by)
        counts = {}
        for m in db.members.find({"union_id": domain.union_id_for(prefix), "status": status}, {field: 1}):
            counts[m[field]] = counts.get(m[field], 0) + 1
        return list(counts.items())
    if group_by == "union":
        flt = {"group_by": "union", "status": status, "union_code": {"$gte": prefix, "$lt": prefix + "~"}}
        head = "%s|*|union|un_%s" % (status, prefix)
    else:
        flt = {"scope": prefix, "group_by": group_by, "status": status}
        head = "%s|%s|%s|" % (status, prefix, group_by)
    counters, deltas = _counters_and_deltas(db, flt)
    counts = {c["key"]: c["n"] for c in counters}
    for d in deltas:  # not folded yet (a fraction of a second's worth)
        for key, delta in d["incs"]:
            if key.startswith(head):
                k = key.rsplit("|", 1)[1]
                counts[k] = counts.get(k, 0) + delta
    return [(k, n) for k, n in counts.items() if n]


def _counters_and_deltas(db, flt):
    """The counters matching ``flt`` and the deltas not folded yet, read in one snapshot (a fold moving deltas into
    the counters between two plain reads would count them twice or not at all)."""
    return transaction(db, lambda session: (
        list(db.member_counts.find(flt, {"key": 1, "n": 1}, session=session)),
        list(db.member_count_deltas.find({}, {"incs": 1}, session=session))))


COUNTS_LEASE = timedelta(minutes=2)  # a rebuild renews its mark at least this often (every 10,000 members)


def ensure_member_counts(db):
    """At start: counters for the members written before there were counters (once; the first process to start
    builds them, before it serves). The mark says ``building`` until the counters are written: a process that was
    killed while building stops renewing it, and the next start that finds it stale builds them again (a mark
    without a state, from before, or set by ``make seed-scale``, means built)."""
    now = clock.now()
    try:
        db.counters.insert_one({"_id": "member-counts", "state": "building", "at": now})
    except DuplicateKeyError:
        # a build left half done: take it over once its builder has stopped renewing the mark (a guarded write:
        # of two processes starting at once, one takes it)
        if db.counters.update_one({"_id": "member-counts", "state": "building", "at": {"$lt": now - COUNTS_LEASE}},
                                  {"$set": {"at": now}}).modified_count != 1:
            return
        log.warning("the member counters were left half built; building them again")
    if db.members.estimated_document_count():
        rebuild_member_counts(db, renew=lambda: db.counters.update_one(
            {"_id": "member-counts", "state": "building"}, {"$set": {"at": clock.now()}}))
    db.counters.update_one({"_id": "member-counts"}, {"$set": {"state": "built", "at": clock.now()}})


def rebuild_member_counts(db, progress=None, renew=None):
    """Counters from the members themselves (members written before the counters; seed-scale after loading): one
    pass over the members. ``progress(n)`` is told every 10,000 members; ``renew()`` is called as often, and every
    1,000 counters written."""
    db.member_counts.delete_many({})
    db.member_count_deltas.delete_many({})
    sums = {}
    fields = {"status": 1, "union_id": 1, "region_code": 1, "prefecture_code": 1, "occupation_group": 1,
              "created_at": 1}
    for n, m in enumerate(db.members.find({}, fields, batch_size=5000), 1):
        if n % 10000 == 0:
            if progress:
                progress(10000)
            if renew:
                renew()
        for key, delta in domain.count_changes(m, m["status"], 1):
            sums[key] = sums.get(key, 0) + delta
    write_member_counts(db, sums, renew)


def write_member_counts(db, sums, renew=None):
    ops = [UpdateOne({"_id": k}, {"$inc": {"n": v}, "$setOnInsert": domain.counter_fields(k)}, upsert=True)
           for k, v in sums.items() if v]
    for n in range(0, len(ops), 1000):
        db.member_counts.bulk_write(ops[n:n + 1000], ordered=False)
        if renew:
            renew()


# ---- transfers --------------------------------------------------------------------------------------------------
def insert_transfer(db, doc, session):
    insert_unique(db.transfers, doc, session,
                  Conflict("A transfer of this membership is already waiting for approval.", code="TRANSFER_PENDING"),
                  ("live_member",))


def transfer(db, transfer_id):
    return db.transfers.find_one({"_id": transfer_id})


def pending_transfer_of(db, member_id):
    return db.transfers.find_one({"live_member": member_id})


def decide_transfer(db, transfer_id, status, by, reason, now, session):
    """pending -> ``status``; None unless the transfer was pending."""
    return update_returning(
        db.transfers, {"_id": transfer_id, "status": "pending"},
        {"$set": {"status": status, "decided_at": now, "decided_by": by, "reason": reason},
         "$unset": {"live_member": ""}},
        session=session)


def cancel_transfers(db, member_id, now, session):
    db.transfers.update_many({"member_id": member_id, "status": "pending"},
                             {"$set": {"status": "cancelled", "decided_at": now}, "$unset": {"live_member": ""}},
                             session=session)


def list_transfers(db, prefix=None, union_id=None, status=None, after=None, limit=20):
    q = {"to_union_id": union_id} if union_id else {"to_union_code": {"$regex": "^" + re.escape(prefix)}}
    if status:
        q["status"] = status
    if after:
        q["_id"] = {"$gt": after}
    return list(db.transfers.find(q).sort("_id", ASC).limit(limit + 1))


# ---- logins (sessions), refresh tokens and revocations ----------------------------------------------------------
def insert_session(db, doc):
    db.sessions.insert_one(doc)


def login_session(db, sid):
    return db.sessions.find_one({"_id": sid})


def rotate_session(db, sid, old_hash, new_hash, now):
    """Spend ``old_hash`` (the session's current refresh token) for ``new_hash``; False if it was not current (a
    concurrent refresh spent it first) or the login has ended or expired."""
    return db.sessions.update_one(
        {"_id": sid, "refresh_hash": old_hash, "revoked_at": None, "expires_at": {"$gt": now}},
        {"$set": {"refresh_hash": new_hash, "refreshed_at": now},
         "$push": {"spent": {"$each": [old_hash], "$slice": -domain.SPENT_REFRESH_KEPT}}}).modified_count == 1


def end_session(db, sid, now, reason):
    """End one login (logout, a spent refresh token presented again); its revocation for the gateways."""
    if db.sessions.update_one({"_id": sid, "revoked_at": None},
                              {"$set": {"revoked_at": now, "revoked_why": reason}}).modified_count:
        return add_revocation(db, {"kind": "session", "sid": sid}, now)
    return None


def end_sessions_of(db, sub, now, reason, session=None):
    """End every login of account ``sub`` (erasure, an account disabled): a revocation of all its tokens so far."""
    db.sessions.update_many({"sub": sub, "revoked_at": None}, {"$set": {"revoked_at": now, "revoked_why": reason}},
                            session=session)
    return add_revocation(db, {"kind": "user", "sub": sub, "not_before": int(now.timestamp())}, now, session)


def add_revocation(db, doc, now, session=None):
    doc = dict(doc, _id=domain.new_id("rvk"), at=now)
    db.revocations.insert_one(doc, session=session)
    return doc


def revocations_since(db, after, now):
    """Revocations at or after ``after`` (never older than an access token's life: older ones no longer matter)."""
    floor = now - timedelta(seconds=domain.REVOCATION_KEEP_SECONDS)
    return list(db.revocations.find({"at": {"$gte": max(after, floor) if after else floor}}).sort("at", ASC).limit(
        domain.REVOCATIONS_PAGE))


def purge_sessions(db, now):
    db.sessions.delete_many({"expires_at": {"$lt": now}})
    db.revocations.delete_many({"at": {"$lt": now - timedelta(seconds=domain.REVOCATION_KEEP_SECONDS)}})


def disable_account(db, account_id, now, session=None):
    return update_returning(db.accounts, {"_id": account_id}, {"$set": {"disabled_at": now}}, session=session)

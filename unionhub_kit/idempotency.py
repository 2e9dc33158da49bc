"""``Idempotency-Key`` on writes that create something: the same key from the same caller returns the first result.

The key is claimed inside the write's own transaction (collection ``idempotency``, ``_id`` = caller|key), so of two
concurrent requests with one key only one does the work; the other answers the stored result. The same key with
another body is refused with 422 ``IDEMPOTENCY_KEY_REUSED``.

**Key scope, one rule for every service**: a key belongs to one caller *and one operation*. The ``caller`` given
here is ``scope(operation, account id)`` (``"claim:usr_1"``), so a client that reuses a key for another kind of
request is not answered with the first request's result (nor refused).

Two ways in: ``run_idempotent`` for one request in its own transaction, and the batch API (``key_id``,
``stored_results``, ``replay``, ``remember``) for group commits that decide many requests at once and write their
results in the batch's one transaction (benefits' claims).
"""
import json

from pymongo.errors import DuplicateKeyError

from . import clock, crypto
from .errors import AppError
from .mongo import transaction


def key_reused():
    return AppError("This Idempotency-Key was used with another request.", code="IDEMPOTENCY_KEY_REUSED", status=422)


def fingerprint(payload):
    """A keyed digest of a request body."""
    return crypto.keyed_hash(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str), "idempotency")


def scope(operation, caller):
    """The ``caller`` of a key: the operation and the account (see the module's key-scope rule)."""
    return "%s:%s" % (operation, caller)


def key_id(caller, key):
    return "%s|%s" % (caller, key)


def replay(stored, fp):
    """The remembered result of ``stored`` (a record of the key), or 422 if the key came with another request."""
    if stored["fp"] != fp:
        raise key_reused()
    return stored["result"]


def stored_results(db, ids):
    """``{key id: record}`` of the keys among ``ids`` whose request has finished (one query)."""
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        return {}
    return {d["_id"]: d for d in db.idempotency.find({"_id": {"$in": ids}}) if "result" in d}


def remember(db, session, entries, now=None):
    """Store ``[(key id, fingerprint, result)]`` in ``session``'s transaction (one insert). A key stored by a
    concurrent request raises ``DuplicateKeyError`` (the transaction is aborted: decide again, the key replays)."""
    if entries:
        now = now or clock.now()
        db.idempotency.insert_many([{"_id": i, "fp": fp, "result": result, "created_at": now}
                                    for i, fp, result in entries], ordered=True, session=session)


def run_idempotent(db, caller, key, payload, fn):
    """Run ``fn(session)`` in a transaction; with a key, remember ``(caller, key) -> result`` in the same one."""
    if key is None:
        return transaction(db, fn)
    _id = key_id(caller, key)
    fp = fingerprint(payload)

    def prior():
        stored = stored_results(db, [_id]).get(_id)
        return None if stored is None else replay(stored, fp)

    found = prior()
    if found is not None:
        return found

    def txn(session):
        db.idempotency.insert_one({"_id": _id, "fp": fp, "created_at": clock.now()}, session=session)
        result = fn(session)
        db.idempotency.update_one({"_id": _id}, {"$set": {"result": result}}, session=session)
        return result
    try:
        return transaction(db, txn)
    except (DuplicateKeyError, AppError):
        # the key was claimed by a concurrent request that has now committed (its write may also be what refused
        # this one, e.g. "already a member"): that request's answer is this one's too
        found = prior()
        if found is None:
            raise
        return found

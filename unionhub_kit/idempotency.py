"""``Idempotency-Key`` on writes that create something: the same key from the same caller returns the first result.

The key is claimed inside the write's own transaction (collection ``idempotency``, ``_id`` = caller|key), so of two
concurrent requests with one key only one does the work; the other answers the stored result. The same key with
another body is refused with 422 ``IDEMPOTENCY_KEY_REUSED``.
"""
import json

from pymongo.errors import DuplicateKeyError

from . import crypto, events
from .errors import AppError
from .mongo import transaction


def key_reused():
    return AppError("This Idempotency-Key was used with another request.", code="IDEMPOTENCY_KEY_REUSED", status=422)


def fingerprint(payload):
    """A keyed digest of a request body."""
    return crypto.keyed_hash(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str), "idempotency")


def run_idempotent(db, caller, key, payload, fn):
    """Run ``fn(session)`` in a transaction; with a key, remember ``(caller, key) -> result`` in the same one."""
    if key is None:
        return transaction(db, fn)
    _id = "%s|%s" % (caller, key)
    fp = fingerprint(payload)

    def replay():
        stored = db.idempotency.find_one({"_id": _id})
        if stored is None or "result" not in stored:
            return None
        if stored["fp"] != fp:
            raise key_reused()
        return stored["result"]

    found = replay()
    if found is not None:
        return found

    def txn(session):
        db.idempotency.insert_one({"_id": _id, "fp": fp, "created_at": events.utcnow()}, session=session)
        result = fn(session)
        db.idempotency.update_one({"_id": _id}, {"$set": {"result": result}}, session=session)
        return result
    try:
        return transaction(db, txn)
    except (DuplicateKeyError, AppError):
        # the key was claimed by a concurrent request that has now committed (its write may also be what refused
        # this one, e.g. "already a member"): that request's answer is this one's too
        found = replay()
        if found is None:
            raise
        return found

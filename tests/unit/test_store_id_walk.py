"""The embedded store's ``_id``-hinted find (``deploy/store.py``, ``decode_id_walks_outside_the_lock``): the same
documents in the same order as the store's own code, with the store's lock given up while it walks the collection
and not held while the documents are decoded (notify's province-wide fan-out held it for seconds at 206,000
members, and every write of the store waited)."""
import threading

import bson
import pymongo
from secantus import storage as st

from deploy import store as store_wrapper


class CountingLock:
    """A re-entrant lock that remembers when it was released (after how many documents walked)."""

    def __init__(self, walked):
        self.lock, self.walked, self.released = threading.RLock(), walked, []

    def acquire(self):
        return self.lock.acquire()

    def release(self):
        self.released.append(len(self.walked))
        self.lock.release()

    def _is_owned(self):
        return self.lock._is_owned()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.lock.release()  # not counted: the caller's own release


class FakeStorage:
    """What ``_candidates_from_hint`` reads of a ``Storage``: its lock and its walk of a collection's documents."""

    def __init__(self, docs):
        self.docs = docs
        self.held_at = []  # for each document walked: whether this thread held the lock when it was read
        self._lock = CountingLock(self.held_at)

    def _scan_docs(self, db, coll):
        for rid, d in enumerate(self.docs):
            self.held_at.append(self._lock._is_owned())
            yield rid, bson.encode({"_id": d["_id"]}), bson.encode(d)  # id key: any bytes in _id order


def patched_class():
    return store_wrapper.decode_id_walks_outside_the_lock(type("S", (FakeStorage,), {
        "_candidates_from_hint": lambda self, *a: ("the store's own", a)}))


def walk(fake, sort_dir):
    with fake._lock:  # as find_matching calls it
        return patched_class()._candidates_from_hint(fake, "db", "c", st._ID_INDEX_NAME, "_id", sort_dir)


def test_the_walk_gives_up_the_lock_every_chunk_and_decodes_after_it():
    ids = ["u%05d" % i for i in range(2 * store_wrapper.ID_WALK_CHUNK + 500)]
    docs = [{"_id": i, "n": k} for k, i in enumerate(reversed(ids))]  # inserted in the reverse of _id order
    fake = FakeStorage(docs)
    out, in_order = walk(fake, 1)
    assert in_order
    # given up after each chunk (and taken back: every document is read holding it; ``with`` lets go at the end)
    assert fake._lock.released == [store_wrapper.ID_WALK_CHUNK, 2 * store_wrapper.ID_WALK_CHUNK]
    assert len(fake.held_at) == len(ids) and all(fake.held_at)
    assert not fake._lock._is_owned()
    assert isinstance(out, store_wrapper._Decoded) and out.blobs is None  # nothing decoded or sorted yet
    assert [d["_id"] for d in out] == ids and len(out) == len(ids)
    assert out[0] == {"_id": ids[0], "n": len(ids) - 1} and [d["_id"] for d in out[1:3]] == ids[1:3]


def test_descending_and_other_hints():
    docs = [{"_id": "b"}, {"_id": "c"}, {"_id": "a"}]
    out, in_order = walk(FakeStorage(docs), -1)
    assert in_order and [d["_id"] for d in out] == ["c", "b", "a"]
    assert patched_class()._candidates_from_hint(FakeStorage(docs), "db", "c", "x_1", None, 0) == (
        "the store's own", ("db", "c", "x_1", None, 0))


def test_the_running_store_answers_id_hinted_finds_in_id_order(mongo, db_prefix):
    """Through the real store process (started by ``deploy/store.py``): a hinted find filters, sorts either way,
    skips, limits and projects as before, over more documents than one chunk."""
    db = mongo[db_prefix + "_idwalk"]
    n = store_wrapper.ID_WALK_CHUNK * 2 + 7
    ids = ["m%05d" % ((k * 7919) % n) for k in range(n)]  # inserted out of _id order
    db.c.insert_many([{"_id": i, "even": int(i[1:]) % 2 == 0, "x": i[::-1]} for i in ids])
    want = sorted(i for i in ids if int(i[1:]) % 2 == 0)
    got = [d["_id"] for d in db.c.find({"even": True}, {"_id": 1}).sort("_id", pymongo.ASCENDING).hint("_id_")]
    assert got == want
    got = [d["_id"] for d in db.c.find({"even": True}).sort("_id", pymongo.DESCENDING).hint("_id_")]
    assert got == want[::-1]
    page = list(db.c.find({"even": True}, {"x": 1}).sort("_id", 1).hint("_id_").skip(10).limit(3))
    assert page == [{"_id": i, "x": i[::-1]} for i in want[10:13]]
    assert [d["_id"] for d in db.c.find({"_id": {"$gt": want[-3]}}).sort("_id", 1).hint("_id_")] == sorted(
        i for i in ids if i > want[-3])
    mongo.drop_database(db_prefix + "_idwalk")

"""The embedded store's retryable-write records (``deploy/store.py``, ``keep_retryable_records_in_order``): the same
records and the same replies as the store's own code, pruned from the oldest end instead of by a scan (and, at the
cap, a sort) of every record on every write: the cause of the login slowdown on a busy store."""
from bson import SON, Int64
from secantus import transactions as txns

from deploy import store as store_wrapper

REPLY = {"ok": 1.0, "n": 1, "nModified": 1}


class Clock:
    def __init__(self):
        self.t = 1_000.0

    def __call__(self):
        return self.t


def registry(clock):
    return store_wrapper.keep_retryable_records_in_order()(time_func=clock)


def test_a_retried_write_gets_the_stored_reply_and_another_command_does_not():
    r = registry(Clock())
    assert r.retryable_reply(b"s1", 1, b"cmd") is None
    r.record_retryable(b"s1", 1, b"cmd", dict(REPLY))
    assert r.retryable_reply(b"s1", 1, b"cmd") == REPLY
    assert r.retryable_reply(b"s1", 1, b"another command") is None
    assert r.retryable_reply(b"s1", 2, b"cmd") is None
    r.record_retryable(b"s1", 3, b"cmd", {"ok": 0.0, "errmsg": "failed"})  # a failed write is not recorded
    assert r.retryable_reply(b"s1", 3, b"cmd") is None


def test_records_expire_after_the_stores_lifetime_oldest_first():
    clock = Clock()
    r = registry(clock)
    r.record_retryable(b"old", 1, b"c", dict(REPLY))
    clock.t += 60
    r.record_retryable(b"new", 1, b"c", dict(REPLY))
    clock.t += txns._RETRYABLE_RECORD_LIFETIME_SECONDS - 30  # "old" is past its lifetime, "new" is not
    assert r.retryable_reply(b"old", 1, b"c") is None
    assert r.retryable_reply(b"new", 1, b"c") == REPLY


def test_at_the_cap_exactly_the_oldest_records_go(monkeypatch):
    clock = Clock()
    r = registry(clock)
    cap = txns._RETRYABLE_RECORD_MAX
    for i in range(cap):
        clock.t += 0.001
        r.record_retryable(b"s%d" % i, 1, b"c", dict(REPLY))
    r.record_retryable(b"s0", 1, b"c", dict(REPLY))  # stored again (a retry after a lost reply): now the newest

    def no_sort(*a, **kw):
        raise AssertionError("the store's pruning sorts every record at the cap (8-9 ms a write at 10,000)")
    monkeypatch.setattr(txns, "sorted", no_sort, raising=False)
    for i in (cap, cap + 1):
        clock.t += 0.001
        r.record_retryable(b"s%d" % i, 1, b"c", dict(REPLY))
    assert len(r._retryable) == cap
    assert r.retryable_reply(b"s1", 1, b"c") is None and r.retryable_reply(b"s2", 1, b"c") is None
    for i in (0, 3, cap - 1, cap, cap + 1):
        assert r.retryable_reply(b"s%d" % i, 1, b"c") == REPLY


def test_records_the_store_held_before_the_change_are_kept_in_time_order():
    clock = Clock()
    r = txns.TransactionRegistry(time_func=clock)
    r._retryable[(b"late", 1)] = (dict(REPLY), clock.t + 5, b"c")  # a plain dict, as the store makes it
    r._retryable[(b"early", 1)] = (dict(REPLY), clock.t, b"c")
    store_wrapper.keep_retryable_records_in_order()
    clock.t += txns._RETRYABLE_RECORD_LIFETIME_SECONDS + 1  # "early" expired, "late" not yet
    r.record_retryable(b"next", 1, b"c", dict(REPLY))
    assert list(r._retryable) == [(b"late", 1), (b"next", 1)]


def test_the_running_store_applies_a_retried_write_once(mongo, db_prefix):
    """Through the real store process (started by ``deploy/store.py``): the same ``lsid`` + ``txnNumber`` sent
    twice, as a driver retries after a lost reply, increments once and answers the same."""
    db = mongo[db_prefix + "_retryable"]
    db.c.delete_many({})
    db.c.insert_one({"_id": 1, "n": 0})
    cmd = SON([("update", "c"), ("updates", [{"q": {"_id": 1}, "u": {"$inc": {"n": 1}}}]), ("txnNumber", Int64(1))])
    with mongo.start_session() as s:
        first = db.command(cmd, session=s)
        again = db.command(cmd, session=s)
    assert (first["n"], first["nModified"]) == (again["n"], again["nModified"]) == (1, 1)
    assert db.c.find_one({"_id": 1})["n"] == 1

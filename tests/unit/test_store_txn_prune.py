"""The embedded store's transaction registry (``deploy/store.py``, ``prune_transactions_once_a_second``): idle
transactions are still aborted, but a statement or commit looks for them at most once a second, passes over the
finished ones (every transaction the store ever ran stays in the registry) without taking their locks, and does not
wait for a transaction whose statement is running."""
import threading
from types import SimpleNamespace

from secantus import transactions as txns

from deploy import store as store_wrapper


class Clock:
    def __init__(self):
        self.t = 1_000.0

    def __call__(self):
        return self.t


class NoTouch:
    """The lock of a finished transaction: taking it is what the store's own pruning did for each one."""

    def acquire(self, *a, **kw):
        raise AssertionError("a finished transaction's lock was taken")

    __enter__ = acquire


def txn(state, last_use, mutex=None):
    return SimpleNamespace(state=state, last_use=last_use, mutex=mutex or threading.Lock())


def test_idle_transactions_are_aborted_at_most_once_a_second_and_finished_ones_are_not_locked():
    clock = Clock()
    rolled = []
    r = store_wrapper.prune_transactions_once_a_second()(rollback_func=rolled.append, lifetime_seconds=5,
                                                         time_func=clock)
    for k in range(1000):  # what a long-lived store holds: one per logical session that ever ran one
        r._txns[b"done%d" % k] = txn(txns.TxnState.COMMITTED, clock.t - 3600, NoTouch())
    idle, live = txn(txns.TxnState.IN_PROGRESS, clock.t - 6), txn(txns.TxnState.IN_PROGRESS, clock.t - 1)
    busy = txn(txns.TxnState.IN_PROGRESS, clock.t - 60)
    busy.mutex.acquire()  # a statement of it is running
    r._txns.update({b"idle": idle, b"live": live, b"busy": busy})
    assert r.prune_expired() == 1  # without waiting for the busy one
    assert idle.state is txns.TxnState.ABORTED and rolled == [idle]
    assert live.state is busy.state is txns.TxnState.IN_PROGRESS
    busy.mutex.release()
    clock.t += 0.5
    assert r.prune_expired() == 0  # looked less than a second ago
    assert busy.state is txns.TxnState.IN_PROGRESS
    clock.t += 0.6
    assert r.prune_expired() == 1 and busy.state is txns.TxnState.ABORTED and rolled == [idle, busy]
    clock.t += 5
    assert r.prune_expired() == 1 and live.state is txns.TxnState.ABORTED


def test_the_running_store_aborts_an_abandoned_transaction(mongo, db_prefix):
    """Through the real store process (started by ``deploy/store.py``): a transaction that is never committed
    leaves nothing, and one after it commits."""
    db = mongo[db_prefix + "_prune"]
    db.c.insert_one({"_id": 1, "n": 0})
    with mongo.start_session() as s:
        s.start_transaction()
        db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=s)
        # never committed: the session's end aborts it
    with mongo.start_session() as s:
        s.with_transaction(lambda s_: db.c.update_one({"_id": 1}, {"$inc": {"n": 10}}, session=s_))
    assert db.c.find_one({"_id": 1})["n"] == 10
    mongo.drop_database(db_prefix + "_prune")

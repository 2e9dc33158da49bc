"""Run the embedded store (SecantusDB) the way UnionHub needs it: ``python -m deploy.store <secantusd-py flags>``.

``secantusd-py`` itself, plus the five things its command line cannot set (SecantusDB 0.7, see its ``server.py`` and
``transactions.py``):

* **Transaction lifetime** ``STORE_TXN_LIFETIME_SECONDS`` (default 5; the store's built-in is 60): a transaction
  idle that long is aborted. A process killed inside a transaction leaves it open; until it is aborted its writes
  hold their documents, and any other write to them waits. Our transactions are a few statements in a row, so an
  idle gap of seconds only means the client is gone (a live one that is cut off retries its transaction whole).
* **A reaper thread** that aborts such transactions every second. The store only reaps when a later transaction
  statement arrives, and that reaper takes every transaction's lock in turn while holding the registry lock: when a
  plain write is retrying behind the dead transaction (holding its collection lock) and a live transaction waits
  for that collection, the store's reaper waits on the live one and nothing moves again
  (``/work/shared/repro/store_abandoned_transaction.py``). This one skips a transaction whose lock is busy.
* **Retryable-write records kept in time order** (``keep_retryable_records_in_order``). The store remembers the
  reply of every retryable write (every write outside a transaction: pymongo's ``retryWrites``) for 30 minutes, at
  most 10,000, so that a driver's retry is answered, not applied twice. Its pruning, run under the registry lock on
  every such write, walks all the records and, at the cap, sorts them all: 0.03 ms of CPU a write at 100 records,
  0.45 ms at 5,000, **8-9 ms at 10,000** (measured on its ``TransactionRegistry`` alone). A store that took 10,000
  writes in the last half hour (any busy one: the login benchmark at scale ran on a store a previous run had
  filled) spent that on each of a login's four writes, while every transaction's start and commit waited for the
  same lock (store CPU per ``POST /auth/token`` 101 ms against 13 on a fresh store). Kept in an ordered map,
  oldest first, pruning drops only what expired or overflows from the front: the same records, the same
  eviction, a constant cost.

* **Idle transactions looked for once a second** (``prune_transactions_once_a_second``). The store keeps every
  transaction it ever ran (one per logical session, never dropped) and, on every transaction statement and commit,
  under the registry lock, walked them all taking each one's lock (waiting for any whose statement was running)
  to abort the idle ones. A store that had run 5,000 sessions' transactions spent 4.9 ms of CPU on a two-read
  transaction that took 1.5 ms on a fresh one (101 against 648 a second, 8 threads); the seed-scale store, after a
  seed and four benchmark runs, 2.1-2.2 ms (member statistics at scale: 2.3 against 0.8 ms of store CPU a
  request). Now: at most once a second, finished transactions passed over without their lock, a busy one skipped
  (the reaper below aborts idle ones every second as well): 1.1-1.2 ms at 5,000 sessions.
* **A find hinted to the ``_id`` index decodes its documents after it lets go of the store's lock**
  (``decode_id_walks_outside_the_lock``). The store answers ``find(...).hint("_id_")`` by walking every document
  of the collection, sorting them by ``_id`` and decoding them all (``Storage._candidates_from_hint``) while it
  holds ``Storage._lock``, the one lock every write, commit and indexed read of the whole store also takes. notify's
  fan-out reads a province-wide audience that way (``services/notify/store.py``, ``audience_stream``): at 206,000
  members the walk held the lock for 1.5-4.9 s, and the transaction of an announcement posted meanwhile waited that
  long in ``_close_user_txn_session`` (``py-spy dump`` of the store; bench.scale's second province notice showed
  in a sampled inbox after 2.4-2.7 s instead of 40-60 ms). Its other paths (the collection scan) already collect
  the raw documents under the lock and decode them after it; this does the same for the ``_id`` walk: the same
  documents in the same order, decoded as the find reads them, with the lock released.

Durability is the caller's flag: ``deploy/stack.py`` passes ``--sync-on-commit``, without which a committed
transaction is not on disk when the client is told so, whatever its write concern (measured: 1-35 of 900-2,600
acknowledged transactions lost per kill -9; 0 with the flag).
"""
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger("unionhub.store")


def txn_lifetime():
    return float(os.environ.get("STORE_TXN_LIFETIME_SECONDS") or 5)


def reap_idle(registry, lifetime, now=None):
    """Abort the transactions idle for ``lifetime`` seconds whose lock is free; return how many."""
    from secantus.transactions import TxnState
    cutoff = (time.time() if now is None else now) - lifetime
    with registry._lock:
        txns = list(registry._txns.values())
    reaped = 0
    for txn in txns:
        if not txn.mutex.acquire(blocking=False):
            continue  # a statement of it is running: not idle
        try:
            if txn.state is TxnState.IN_PROGRESS and txn.last_use < cutoff:
                registry._rollback_quietly(txn)
                txn.state = TxnState.ABORTED
                reaped += 1
        finally:
            txn.mutex.release()
    return reaped


def _reaper(server, lifetime):
    while True:
        time.sleep(1.0)
        try:
            n = reap_idle(server.transactions, lifetime)
            if n:
                log.warning("aborted %d transaction(s) idle for more than %.0fs (their client is gone)", n, lifetime)
        except Exception:
            log.exception("transaction reaper")


def keep_retryable_records_in_order(registry_class=None):
    """Make ``TransactionRegistry``'s retryable-write records an ``OrderedDict`` in the order they were stored (=
    time order: a record stored again moves to the end), and prune them from the oldest end: what expired
    (``_RETRYABLE_RECORD_LIFETIME_SECONDS``), then the oldest beyond ``_RETRYABLE_RECORD_MAX``. The store's own
    pruning scans every record on each retryable write and sorts them all at the cap (see the module docstring).
    Idempotent; returns the class."""
    from collections import OrderedDict

    from secantus import transactions as txns
    cls = registry_class or txns.TransactionRegistry
    if getattr(cls, "_unionhub_ordered_retryable", False):
        return cls

    def records(self):
        r = self._retryable
        if not isinstance(r, OrderedDict):  # first use: the store's dict, already in insertion order
            r = self._retryable = OrderedDict(sorted(r.items(), key=lambda kv: kv[1][1]))
        return r

    def record_retryable(self, lsid_bytes, txn_number, identity, reply):
        if not txns._is_recordable_reply(reply):
            return
        with self._lock:
            r = records(self)
            key = (lsid_bytes, txn_number)
            r[key] = (txns._strip_per_attempt_fields(reply), self._time(), identity)
            r.move_to_end(key)
            self._prune_retryable_locked()

    def prune_retryable_locked(self):
        r = records(self)
        cutoff = self._time() - txns._RETRYABLE_RECORD_LIFETIME_SECONDS
        excess = len(r) - txns._RETRYABLE_RECORD_MAX
        while r:
            _key, (_reply, at, _identity) = next(iter(r.items()))
            if excess <= 0 and at >= cutoff:
                break
            r.popitem(last=False)
            excess -= 1

    cls.record_retryable = record_retryable
    cls._prune_retryable_locked = prune_retryable_locked
    cls._unionhub_ordered_retryable = True
    return cls


PRUNE_EVERY_SECONDS = 1.0  # how often a statement or commit looks for idle transactions (the reaper: every second)


def prune_transactions_once_a_second(registry_class=None):
    """Make ``TransactionRegistry._prune_locked`` (run by every transaction statement and commit, under the
    registry lock) look for transactions idle past their lifetime at most once every ``PRUNE_EVERY_SECONDS``, skip
    the ones that are not in progress without taking their lock, and skip one whose lock is busy (a statement of
    it is running: not idle) instead of waiting for it, as ``reap_idle`` does. The store's own walks every
    transaction it ever ran (one per logical session; SecantusDB 0.7 drops an entry only when a retryable write of
    its session follows), taking each one's lock and waiting for it, on every statement and commit: a long-lived
    store pays for its age on each transaction, and each transaction's statement waits for every other running one.
    Idempotent; returns the class."""
    from secantus import transactions as txns
    cls = registry_class or txns.TransactionRegistry
    if getattr(cls, "_unionhub_pruned_once_a_second", False):
        return cls

    def prune_locked(self):
        now = self._time()
        if now - getattr(self, "_unionhub_pruned_at", float("-inf")) < PRUNE_EVERY_SECONDS:
            return 0
        self._unionhub_pruned_at = now
        cutoff = now - self._lifetime
        reaped = 0
        for txn in list(self._txns.values()):
            if txn.state is not txns.TxnState.IN_PROGRESS or txn.last_use >= cutoff:
                continue  # read without its lock: looked at again under it before anything is done
            if not txn.mutex.acquire(blocking=False):
                continue
            try:
                if txn.state is txns.TxnState.IN_PROGRESS and txn.last_use < cutoff:
                    self._rollback_quietly(txn)
                    txn.state = txns.TxnState.ABORTED
                    reaped += 1
            finally:
                txn.mutex.release()
        return reaped

    cls._prune_locked = prune_locked
    cls._unionhub_pruned_once_a_second = True
    return cls


class _Decoded(Sequence):
    """``(id key, raw BSON)`` rows, put in ``_id`` order and decoded when first read, outside the store's lock
    (``decode_id_walks_outside_the_lock``)."""

    def __init__(self, rows, descending):
        self.rows, self.descending, self.blobs = rows, descending, None

    def _ordered(self):
        if self.blobs is None:
            self.blobs = [b for _idk, b in sorted(self.rows, key=lambda row: row[0], reverse=self.descending)]
            self.rows = None
        return self.blobs

    def __len__(self):
        return len(self._ordered())

    def __getitem__(self, i):
        import bson
        if isinstance(i, slice):
            return [bson.decode(b) for b in self._ordered()[i]]
        return bson.decode(self._ordered()[i])

    def __iter__(self):
        import bson
        for b in self._ordered():
            yield bson.decode(b)


ID_WALK_CHUNK = 1000  # documents read between two looks away from the lock


def _let_others_take(lock):
    """Release ``lock`` (held by this thread, see ``decode_id_walks_outside_the_lock``) and take it again, so that a
    thread waiting for it goes first."""
    try:
        lock.release()
    except RuntimeError:  # not held here: nothing to give up
        return
    time.sleep(0)
    lock.acquire()


def decode_id_walks_outside_the_lock(storage_class=None):
    """Make ``Storage._candidates_from_hint`` answer the ``_id_`` hint without holding ``Storage._lock`` for the
    whole collection: it walks the documents releasing the lock every ``ID_WALK_CHUNK`` of them (the walk reads the
    thread's own WiredTiger session, whose snapshot stays pinned from its first read, so it sees one point in time
    either way) and returns them raw (``_Decoded``); ``find_matching``, which calls it holding the lock, sorts and
    decodes them as it filters them, after the lock is released (its own path for a collection scan). The same
    documents in the same order. Every other hint goes to the store's own code. Idempotent; returns the class."""
    from secantus import storage as st
    cls = storage_class or st.Storage
    if getattr(cls, "_unionhub_lazy_id_walk", False):
        return cls
    original = cls._candidates_from_hint

    def candidates_from_hint(self, db, coll, resolved, sort_field, sort_dir):
        if resolved != st._ID_INDEX_NAME:
            return original(self, db, coll, resolved, sort_field, sort_dir)
        rows = []
        for n, (_rid, idk, b) in enumerate(self._scan_docs(db, coll), 1):
            rows.append((idk, b))
            if n % ID_WALK_CHUNK == 0:
                _let_others_take(self._lock)
        in_order = sort_field == "_id"
        return _Decoded(rows, in_order and sort_dir == -1), in_order

    cls._candidates_from_hint = candidates_from_hint
    cls._unionhub_lazy_id_walk = True
    return cls


def main(argv=None):
    from secantus import cli
    from secantus.server import SecantusDBServer

    lifetime = txn_lifetime()
    keep_retryable_records_in_order()
    prune_transactions_once_a_second()
    decode_id_walks_outside_the_lock()

    class Server(SecantusDBServer):
        def __init__(self, *args, **kwargs):
            kwargs["transaction_lifetime_seconds"] = lifetime
            super().__init__(*args, **kwargs)

        def start(self):
            super().start()
            threading.Thread(target=_reaper, args=(self, lifetime), name="unionhub-txn-reaper", daemon=True).start()

    cli.SecantusDBServer = Server
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())

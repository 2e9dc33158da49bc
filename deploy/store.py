"""Run the embedded store (SecantusDB) the way UnionHub needs it: ``python -m deploy.store <secantusd-py flags>``.

``secantusd-py`` itself, plus the two things its command line cannot set (SecantusDB 0.7, see its ``server.py`` and
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

Durability is the caller's flag: ``deploy/stack.py`` passes ``--sync-on-commit``, without which a committed
transaction is not on disk when the client is told so, whatever its write concern (measured: 1-35 of 900-2,600
acknowledged transactions lost per kill -9; 0 with the flag).
"""
import logging
import os
import sys
import threading
import time

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


def main(argv=None):
    from secantus import cli
    from secantus.server import SecantusDBServer

    lifetime = txn_lifetime()

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

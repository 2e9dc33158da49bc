"""The ``ping`` RPC every service answers (the gateway's /readyz calls it).

A ping proves the store takes *writes*, not only reads: it commits a small transaction (the replica's row in the
service's ``health`` collection, written by nothing else). A store that still answers reads but no longer commits
(a write frozen behind a dead client's transaction, a full disk) fails the ping within the store timeout, so
/readyz says so.

The answer names the replica that answered (``UNIONHUB_REPLICA`` set by ``deploy/stack.py``; in a container the
host name), so ops and the scaling test can see several replicas share one RPC queue.
"""
import os
import socket

from pymongo.errors import DuplicateKeyError

from . import clock, config
from .mongo import transaction


def ping(service_name, db):
    replica = config.get("UNIONHUB_REPLICA") or socket.gethostname()

    def probe(session):
        db.health.update_one({"_id": replica}, {"$set": {"at": clock.now()}}, upsert=True, session=session)
    try:
        transaction(db, probe)
    except DuplicateKeyError:  # two first pings raced to create the row: it exists now
        transaction(db, probe)
    return {"service": service_name, "ok": True, "replica": replica, "pid": os.getpid()}

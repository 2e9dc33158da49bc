"""Transactional outbox: an event is stored in the same transaction as the state change it announces, and a relay
publishes it to ``<service>.events`` with publisher confirms, retrying until the broker has it.

In a worker::

    def txn(session):
        db.members.update_one({...}, {...}, session=session)
        self.outbox.add(session, "member_joined", data, subject=member_id)
    transaction(self.db, txn)

When the worker ends, the relay is woken and publishes at once; it also polls, so events written by a process that
died before publishing are published by the next relay of that service (any replica). Several replicas lease
batches so each event is normally published once; delivery is at least once and consumers are idempotent.
"""
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta, timezone

import eventlet
from eventlet.queue import Empty, LightQueue
from nameko.amqp.publish import Publisher as AmqpPublisher
from nameko.extensions import DependencyProvider

from . import config, events, topology
from .mongo import database_for

log = logging.getLogger("unionhub.outbox")

LEASE_SECONDS = 30
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
BATCH = 200
RETENTION = timedelta(days=1)


class OutboxWriter:
    def __init__(self, provider, worker_ctx):
        self._provider = provider
        self._worker_ctx = worker_ctx

    @property
    def request_id(self):
        """The request id of this worker (what its events carry)."""
        return self._worker_ctx.data.get("request_id")

    def add(self, session, event, data, subject=None):
        """Store ``event`` (a name from the catalogue) inside ``session``'s transaction; return its id."""
        return self.add_many(session, [(event, data, subject, self.request_id)])[0]

    def add_many(self, session, items):
        """Store ``[(event, data, subject, request id)]`` in one insert inside ``session``'s transaction (a group
        commit writes the events of many requests, each with its own request id); return their ids."""
        envs = [(events.build(self._provider.service, event, data, subject=subject, request_id=request_id), event)
                for event, data, subject, request_id in items]
        store_many(self._provider.db, envs, session=session)
        self._worker_ctx.data.setdefault("_outbox_written", True)
        return [env["id"] for env, _ in envs]


def _row(env, event):
    return {"event_id": env["id"], "type": event, "envelope": env, "created_at": events.utcnow(),
            "published_at": None, "lease_until": EPOCH, "attempts": 0}


def store(db, env, event, session=None):
    db.outbox.insert_one(_row(env, event), session=session)


def store_many(db, envs, session=None):
    """``[(envelope, event name)]`` in one insert."""
    if envs:
        db.outbox.insert_many([_row(env, event) for env, event in envs], session=session)


def _headers(env):
    headers = {"nameko.event_id": env["id"]}
    if env.get("requestid"):
        headers["nameko.request_id"] = env["requestid"]
    return headers


def relay_batch(db, service, publisher, owner, limit=BATCH):
    """Lease up to ``limit`` unpublished events, publish them with confirms, mark them. Return how many."""
    now = events.utcnow()
    # no $or: SecantusDB answers an $or with a collection scan; an unleased row carries the epoch
    free = {"published_at": None, "lease_until": {"$lt": now}}
    ids = [d["_id"] for d in db.outbox.find(free, {"_id": 1}).sort("_id", 1).limit(limit)]
    if not ids:
        return 0
    token = "%s:%s" % (owner, uuid.uuid4().hex[:8])
    db.outbox.update_many(dict(free, _id={"$in": ids}),
                          {"$set": {"lease_until": now + timedelta(seconds=LEASE_SECONDS), "lease": token}})
    mine = list(db.outbox.find({"_id": {"$in": ids}, "lease": token, "published_at": None}).sort("_id", 1))
    exchange = topology.event_exchange(service)
    done = []
    try:
        for doc in mine:
            env = doc["envelope"]
            publisher.publish(env, exchange=exchange, routing_key=doc["type"], extra_headers=_headers(env),
                              message_id=env["id"])
            done.append(doc["_id"])
    finally:
        if done:
            db.outbox.update_many({"_id": {"$in": done}},
                                  {"$set": {"published_at": events.utcnow()}, "$unset": {"lease": ""},
                                   "$inc": {"attempts": 1}})
        failed = [d["_id"] for d in mine if d["_id"] not in set(done)]
        if failed:
            db.outbox.update_many({"_id": {"$in": failed}}, {"$set": {"lease_until": EPOCH}, "$inc": {"attempts": 1}})
    return len(done)


def backlog(db):
    return db.outbox.count_documents({"published_at": None})


class Outbox(DependencyProvider):
    """Injects an ``OutboxWriter``; runs the relay in a managed greenthread of the container."""

    def __init__(self, poll_seconds=1.0):
        self.poll_seconds = poll_seconds
        self._wake = LightQueue(maxsize=1)
        self._running = False
        self.published = 0

    def setup(self):
        self.service = self.container.service_name
        self.db = database_for(self.container)
        self.amqp_uri = self.container.config.get("AMQP_URI") or config.get("AMQP_URI")
        self.publisher = AmqpPublisher(self.amqp_uri, use_confirms=True, serializer="json",
                                       retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2,
                                                                 "interval_step": 0.5, "interval_max": 2})
        self.owner = "%s-%s-%d" % (self.service, socket.gethostname(), os.getpid())

    def start(self):
        self._running = True
        self.container.spawn_managed_thread(self._run, identifier="outbox-relay")

    def stop(self):
        self._running = False
        self.kick()

    def kill(self):
        self._running = False

    def kick(self):
        try:
            self._wake.put_nowait(1)
        except Exception:
            pass

    def get_dependency(self, worker_ctx):
        return OutboxWriter(self, worker_ctx)

    def worker_teardown(self, worker_ctx):
        if worker_ctx.data.pop("_outbox_written", None):
            if os.environ.get("UNIONHUB_FAULT") == "crash_before_publish":
                # fault injection for the crash test: the state and its event are committed, nothing is published
                log.error("fault injection: exiting between commit and publish")
                os._exit(17)
            self.kick()

    def _run(self):
        declared = False
        delay = 0.2
        last_cleanup = events.utcnow()
        while self._running:
            try:
                if not declared:
                    # every queue bound to our exchange exists before our first publish
                    topology.declare_uri(self.amqp_uri, [self.service])
                    declared = True
                while self._running and relay_batch(self.db, self.service, self.publisher, self.owner):
                    pass
                delay = 0.2
                if events.utcnow() - last_cleanup > timedelta(minutes=1):
                    self.db.outbox.delete_many({"published_at": {"$lt": events.utcnow() - RETENTION}})
                    last_cleanup = events.utcnow()
            except Exception as exc:  # broker or store down: keep the events, try again later
                log.warning("outbox relay of %s failed, retrying in %.1fs: %s", self.service, delay, exc)
                eventlet.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                self._wake.get(timeout=self.poll_seconds)
            except Empty:
                pass

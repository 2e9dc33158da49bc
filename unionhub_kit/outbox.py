"""Transactional outbox: an event is stored in the same transaction as the state change it announces, and a relay
publishes it to ``<service>.events`` with publisher confirms, retrying until the broker has it.

In a worker::

    def txn(session):
        db.members.update_one({...}, {...}, session=session)
        self.outbox.add(session, "member_joined", data, subject=member_id)
    transaction(self.db, txn)

When the transaction commits (or the worker ends), the relay is woken and publishes in a *round*: one read of
the rows, one wait for the broker's confirms, one delete. Under load (the last round found several rows) rounds start
at most every ``OUTBOX_ROUND_MS`` (50 ms): a round then takes every commit since the last one instead of one commit
each (a round per commit cost every claim batch two more store operations and a broker round trip; two benefits
replicas, each committing smaller batches, paid it twice as often); an event committed while the relay is idle, or
after a round of one row, goes out at once (paced after every round, events committed one after another each waited
up to 50 ms: the event hop's p50 went from 11-14 to 46 ms).

Each row names the process that wrote it (``owner``), and a relay publishes its own process's rows without a lease
(two store operations a round), so replicas never contend on each other's rows. Rows whose writer died before
publishing are *orphans*: every relay also polls for rows older than ``ORPHAN_SECONDS`` and leases them, so the next
relay of that service (any replica, or the restarted process) publishes them. Delivery is at least once and consumers are
idempotent.

A batch is published with one wait for the broker's publisher confirms (``BatchPublisher``), not one per event.
"""
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta, timezone

import amqp
import eventlet
import kombu
from eventlet.queue import Empty, LightQueue
from nameko.extensions import DependencyProvider

from . import clock, config, events, topology
from .mongo import MongoClient, after_commit

log = logging.getLogger("unionhub.outbox")

LEASE_SECONDS = 30
ORPHAN_SECONDS = 5  # a row this old whose writer has not published it is any relay's to publish
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
BATCH = 200
RETENTION = timedelta(days=1)
# a batch of 200 publishes is ~30-50 ms of CPU in one go: the workers of the relay's process (a request's next
# store round trip) waited behind it. Measured, 2,000 events written 50 to a transaction by one worker while its
# process's relay published them: 129 -> 101 ms a transaction (without a relay: 28 ms; load 7-8)
YIELD_EVERY = 10


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
        store_many(self._provider.db, envs, session=session, owner=self._provider.owner)
        self._worker_ctx.data.setdefault("_outbox_written", True)
        # wake the relay as soon as the rows are committed (a worker writing several transactions, a group commit's
        # leader serving batch after batch, would otherwise hold its events back until it ends); the kick at the
        # worker's end stays, for a transaction not made by ``mongo.transaction``
        after_commit(session, self._provider.committed, key="outbox")
        return [env["id"] for env, _ in envs]


def _row(env, event, owner=None):
    return {"event_id": env["id"], "type": event, "envelope": env, "created_at": clock.now(),
            "published_at": None, "lease_until": EPOCH, "attempts": 0, "owner": owner}


def store(db, env, event, session=None):
    db.outbox.insert_one(_row(env, event), session=session)


def store_many(db, envs, session=None, owner=None):
    """``[(envelope, event name)]`` in one insert; ``owner``: the process whose relay publishes them."""
    if envs:
        db.outbox.insert_many([_row(env, event, owner) for env, event in envs], session=session)


def _headers(env):
    headers = {"nameko.event_id": env["id"]}
    if env.get("requestid"):
        headers["nameko.request_id"] = env["requestid"]
    return headers


class BatchPublisher:
    """Publishes a batch of events and waits once for the broker's confirms of all of them (RabbitMQ acknowledges
    the highest delivery tag with ``multiple``), instead of a round trip per event. A nack, a timeout or a broken
    connection raises; the caller publishes the batch again (consumers are idempotent)."""

    def __init__(self, amqp_uri, timeout=10.0):
        self.amqp_uri, self.timeout = amqp_uri, timeout
        self.conn = None

    def _open(self):
        self.conn = kombu.Connection(self.amqp_uri, connect_timeout=5)
        self.channel = self.conn.channel()
        self.channel.confirm_select()
        self.seq, self.unconfirmed, self.nacked = 0, set(), False
        self.channel.events["basic_ack"].add(self._ack)
        self.channel.events["basic_nack"].add(self._nack)
        self.producer = kombu.Producer(self.channel, serializer="json")

    def _ack(self, tag, multiple):
        if multiple:
            self.unconfirmed = {t for t in self.unconfirmed if t > tag}
        else:
            self.unconfirmed.discard(tag)

    def _nack(self, tag, multiple):
        self.nacked = True
        self._ack(tag, multiple)

    def publish_many(self, messages):
        """``[(body, exchange, routing key, headers, message id)]``, persistent; returns once the broker has them."""
        if self.conn is None:
            self._open()
        try:
            for n, (body, exchange, routing_key, headers, message_id) in enumerate(messages, 1):
                self.producer.publish(body, exchange=exchange, routing_key=routing_key, headers=headers,
                                      message_id=message_id, delivery_mode=2, retry=False)
                self.seq += 1
                self.unconfirmed.add(self.seq)
                if n % YIELD_EVERY == 0:  # the relay shares its process with the service's workers
                    eventlet.sleep(0)
            deadline = eventlet.hubs.get_hub().clock() + self.timeout
            while self.unconfirmed:
                left = deadline - eventlet.hubs.get_hub().clock()
                if left <= 0:
                    raise TimeoutError("the broker did not confirm %d event(s)" % len(self.unconfirmed))
                self.channel.wait([amqp.spec.Basic.Ack, amqp.spec.Basic.Nack], timeout=left)
            if self.nacked:
                raise RuntimeError("the broker refused an event (nack)")
        except Exception:
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            try:
                self.conn.release()
            except Exception:
                pass
        self.conn = None


def publish_rows(db, service, publisher, docs, keep=False):
    """Publish outbox rows (one confirm for all), then delete them (one write): once the broker has an event its row
    has done its job. With ``keep`` (``OUTBOX_KEEP_PUBLISHED``) they are marked published instead and deleted after
    ``RETENTION``. Deleting costs the embedded store ~0.25 ms of CPU a row, marking ~0.54 ms (the mark moves the row's
    entries in both outbox indexes) plus ~0.25 ms for the later delete: about 0.5 ms per event, on every claim."""
    exchange = topology.event_exchange(service)
    publisher.publish_many([(d["envelope"], exchange.name, d["type"], _headers(d["envelope"]), d["envelope"]["id"])
                            for d in docs])
    ids = [d["_id"] for d in docs]
    if keep:
        db.outbox.update_many({"_id": {"$in": ids}}, {"$set": {"published_at": clock.now()}, "$unset": {"lease": ""},
                                                      "$inc": {"attempts": 1}})
    else:
        db.outbox.delete_many({"_id": {"$in": ids}})


def relay_own(db, service, publisher, owner, limit=BATCH, keep=False):
    """Publish up to ``limit`` of the rows this process wrote (no lease: only this process's relay takes them
    before they are orphans; one that another relay leased as an orphan is left to it). Return how many."""
    docs = list(db.outbox.find({"published_at": None, "lease_until": EPOCH, "owner": owner}).sort("_id", 1)
                .limit(limit))
    if docs:
        publish_rows(db, service, publisher, docs, keep)
    return len(docs)


def relay_batch(db, service, publisher, owner, limit=BATCH, older_than=None, keep=False):
    """Lease up to ``limit`` unpublished events (only those older than ``older_than`` seconds, if given: orphans),
    publish them with one confirm, mark them. Return how many."""
    now = clock.now()
    # no $or: SecantusDB answers an $or with a collection scan; an unleased row carries the epoch
    free = {"published_at": None, "lease_until": {"$lt": now}}
    if older_than is not None:
        free["created_at"] = {"$lt": now - timedelta(seconds=older_than)}
    ids = [d["_id"] for d in db.outbox.find(free, {"_id": 1}).sort("_id", 1).limit(limit)]
    if not ids:
        return 0
    token = "%s:%s" % (owner, uuid.uuid4().hex[:8])
    db.outbox.update_many(dict(free, _id={"$in": ids}),
                          {"$set": {"lease_until": now + timedelta(seconds=LEASE_SECONDS), "lease": token}})
    mine = list(db.outbox.find({"_id": {"$in": ids}, "lease": token, "published_at": None}).sort("_id", 1))
    if not mine:
        return 0
    try:
        publish_rows(db, service, publisher, mine, keep)
    except Exception:
        db.outbox.update_many({"_id": {"$in": [d["_id"] for d in mine]}},
                              {"$set": {"lease_until": EPOCH}, "$inc": {"attempts": 1}})
        raise
    return len(mine)


def backlog(db):
    return db.outbox.count_documents({"published_at": None})


class Outbox(DependencyProvider):
    """Injects an ``OutboxWriter``; runs the relay in a managed greenthread of the container."""

    store = MongoClient()

    def __init__(self, poll_seconds=1.0):
        self.poll_seconds = poll_seconds
        self._wake = LightQueue(maxsize=1)
        self._running = False
        self.published = 0

    def setup(self):
        self.service = self.container.service_name
        self.db = self.store.database
        self.amqp_uri = config.get("AMQP_URI", self.container.config)
        self.publisher = BatchPublisher(self.amqp_uri)
        self.owner = "%s-%s-%d" % (self.service, socket.gethostname(), os.getpid())
        self.keep = config.get("OUTBOX_KEEP_PUBLISHED", self.container.config)
        self.round_seconds = max(0.0, config.get("OUTBOX_ROUND_MS", self.container.config) / 1000.0)

    def start(self):
        self._running = True
        self.container.spawn_managed_thread(self._run, identifier="outbox-relay")

    def stop(self):
        self._running = False
        self.kick()
        self.publisher.close()

    def kill(self):
        self._running = False

    def kick(self):
        try:
            self._wake.put_nowait(1)
        except Exception:
            pass

    def get_dependency(self, worker_ctx):
        return OutboxWriter(self, worker_ctx)

    def committed(self):
        """A transaction that wrote outbox rows has committed: publish them now."""
        if config.get("UNIONHUB_FAULT") == "crash_before_publish":
            # fault injection for the crash test: the state and its event are committed, nothing is published
            log.error("fault injection: exiting between commit and publish")
            os._exit(17)
        self.kick()

    def worker_teardown(self, worker_ctx):
        if worker_ctx.data.pop("_outbox_written", None):
            self.committed()

    def _run(self):
        declared = False
        delay = 0.2
        last_cleanup = last_orphans = clock.now()
        last_round, last_published = 0.0, 0
        while self._running:
            wait = last_round + self.round_seconds - time.monotonic()
            if wait > 0 and last_published > 1:
                # under load (the last round found several rows): the commits right behind it are published together
                # in this one; after a round of one row (a lone commit, a quiet service) the next goes out at once
                eventlet.sleep(wait)
            last_round, last_published = time.monotonic(), 0
            try:
                if not declared:
                    # every queue bound to our exchange exists before our first publish
                    topology.declare_uri(self.amqp_uri, [self.service])
                    declared = True
                # a short batch took every row committed before its read; a row committed since has kicked the relay
                # again (kicks come after commits), so there is no need for a read that finds nothing
                while self._running:
                    n = relay_own(self.db, self.service, self.publisher, self.owner, keep=self.keep)
                    last_published += n
                    if n < BATCH:
                        break
                if clock.now() - last_orphans > timedelta(seconds=self.poll_seconds):
                    while self._running and relay_batch(self.db, self.service, self.publisher, self.owner,
                                                        older_than=ORPHAN_SECONDS, keep=self.keep):
                        pass
                    last_orphans = clock.now()
                delay = 0.2
                if clock.now() - last_cleanup > timedelta(minutes=1):
                    self.db.outbox.delete_many({"published_at": {"$lt": clock.now() - RETENTION}})
                    last_cleanup = clock.now()
            except Exception as exc:  # broker or store down: keep the events, try again later
                log.warning("outbox relay of %s failed, retrying in %.1fs: %s", self.service, delay, exc)
                eventlet.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                self._wake.get(timeout=self.poll_seconds)
            except Empty:
                pass

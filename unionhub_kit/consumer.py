"""Reliable, idempotent event handling.

``@on_event(source, event)`` replaces nameko's ``@event_handler``, whose failures are acked and dropped:

* the queue, its retry queue and its dead-letter queue come from ``topology`` (declared by publishers too);
* the envelope and its data are validated against the catalogue; a message that does not validate is parked in
  the dead-letter queue at once (retrying it cannot help); so is one that cannot even be decoded (invalid JSON, a
  content type other than JSON), byte for byte, with the decoder's reason (kombu would log and drop it);
* a handler that raises is retried with exponential backoff and jitter (through the retry queue's TTL) up to
  ``EVENT_MAX_ATTEMPTS`` attempts, then parked in the dead-letter queue with the error in its headers; a passing
  failure (another service answered 503/504, the store is out of reach) gets ``EVENT_TRANSIENT_MAX_ATTEMPTS``
  (default 12: about five minutes of backoff);
* the original message is acked only after its retry or dead-letter copy was confirmed by the broker.

``@idempotent`` (under ``@on_event``) records the event's ``(source, id)`` in the service's ``processed_events``
collection inside the same transaction as the handler's writes; a redelivered event has no second effect.
"""
import functools
import logging
import random

from marshmallow import ValidationError
from nameko.amqp.publish import Publisher as AmqpPublisher
from nameko.messaging import Consumer, QueueConsumer
from pymongo.errors import BulkWriteError, DuplicateKeyError

from . import clock, config, events, topology
from .errors import AppError
from .mongo import DUPLICATE_KEY, background_timeout, transaction, unavailable

log = logging.getLogger("unionhub.consumer")

ATTEMPTS_HEADER = "x-unionhub-attempts"


class HandlerConfigError(Exception):
    pass


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help: the message goes straight to the dead-letter queue."""


class ParkingQueueConsumer(QueueConsumer):
    """nameko's queue consumer (one per container, shared by its event handlers), except that a message kombu
    cannot decode is parked in its handler's dead-letter queue with the reason instead of logged and acked."""

    def on_decode_error(self, message, exc):
        tag = (message.delivery_info or {}).get("consumer_tag")
        for provider, consumer in list(self._consumers.items()):
            if tag in getattr(consumer, "_active_tags", {}).values() and hasattr(provider, "park_undecodable"):
                return provider.park_undecodable(message, exc)
        log.error("undecodable message on an unknown consumer (%s), dropped: %s", tag, exc)
        message.ack()


class ReliableEventHandler(Consumer):
    queue_consumer = ParkingQueueConsumer()

    def __init__(self, *bindings, **kwargs):
        self.bindings = bindings
        super().__init__(queue=None, requeue_on_error=False, **kwargs)

    def setup(self):
        service = self.container.service_name
        self.subscription = topology.find(service, self.method_name)
        if self.subscription is None:
            raise HandlerConfigError("%s.%s handles events but is not listed in unionhub_kit.topology.SUBSCRIPTIONS"
                                     % (service, self.method_name))
        self.accepted = set(topology.expand(self.subscription.bindings))
        self.queue, self.retry_queue, self.dead_queue = topology.queues_for(self.subscription)
        cfg = self.container.config
        self.amqp_uri = config.get("AMQP_URI", cfg)
        self.max_attempts = config.get("EVENT_MAX_ATTEMPTS", cfg)
        self.transient_attempts = max(self.max_attempts, config.get("EVENT_TRANSIENT_MAX_ATTEMPTS", cfg))
        self.base_ms = config.get("EVENT_RETRY_BASE_MS", cfg)
        self.publisher = AmqpPublisher(self.amqp_uri, use_confirms=True, serializer="json")
        from kombu import Connection
        with Connection(self.amqp_uri) as conn:
            topology.declare(conn, sorted({src for src, _ in self.accepted}))
        self.retries = 0
        self.dead_lettered = 0
        super().setup()

    def handle_message(self, body, message):
        try:
            env = events.parse(body, self.accepted)
        except (ValidationError, ValueError, KeyError) as exc:
            self._park(message, body, "invalid event: %s" % (exc,), attempts=self._attempts(message) + 1)
            return
        args = (env,)
        context_data = self.unpack_message_headers(message)
        context_data.pop(ATTEMPTS_HEADER, None)
        from functools import partial
        from nameko.exceptions import ContainerBeingKilled
        try:
            self.container.spawn_worker(self, args, {}, context_data=context_data,
                                        handle_result=partial(self.handle_result, message))
        except ContainerBeingKilled:
            self.queue_consumer.requeue_message(message)

    @staticmethod
    def _attempts(message):
        return int((message.headers or {}).get(ATTEMPTS_HEADER, 0))

    def backoff_ms(self, attempt):
        """Exponential backoff with full jitter: base * 2^(attempt-1) * U(0.5, 1.5), at most 60 s."""
        return int(min(60000, self.base_ms * (2 ** (attempt - 1))) * random.uniform(0.5, 1.5))

    def handle_message_processed(self, message, result=None, exc_info=None):
        if exc_info is None:
            self.queue_consumer.ack_message(message)
            return
        exc = exc_info[1]
        attempts = self._attempts(message) + 1
        # an AppError is the handler refusing the event (retrying cannot help), except a 5xx one: another service
        # that is down (503) or slow (504) is a passing state, retried like any failure
        permanent = isinstance(exc, (PermanentError, ValidationError)) or (
            isinstance(exc, AppError) and exc.status < 500)
        # another service down or slow, the store out of reach: retried for minutes (backoff capped at 60 s), as a
        # restart takes longer than the few seconds EVENT_MAX_ATTEMPTS gives a failing handler
        passing = isinstance(exc, AppError) and exc.status >= 500 or unavailable(exc)
        if permanent or attempts >= (self.transient_attempts if passing else self.max_attempts):
            self._park(message, message.payload, "%s: %s" % (type(exc).__name__, exc), attempts)
            return
        delay = self.backoff_ms(attempts)
        log.warning("handler %s.%s failed (attempt %d/%d), retrying in %d ms: %s", self.container.service_name,
                    self.method_name, attempts, self.max_attempts, delay, type(exc).__name__)
        try:
            headers = dict(message.headers or {})
            headers[ATTEMPTS_HEADER] = attempts
            self.publisher.publish(message.payload, exchange="", routing_key=self.retry_queue.name,
                                   extra_headers=headers, expiration=delay / 1000.0)
        except Exception:
            log.exception("could not schedule a retry; requeueing")
            self.queue_consumer.requeue_message(message)
            return
        self.retries += 1
        self.queue_consumer.ack_message(message)

    def park_undecodable(self, message, exc):
        """Park the raw bytes of a message that could not be decoded (content type and encoding kept)."""
        error = "undecodable message (content type %r): %s" % (message.content_type, exc)
        log.error("parking message in %s: %s", self.dead_queue.name, error[:300])
        from kombu import Connection
        headers = dict(message.headers or {})
        headers.update({ATTEMPTS_HEADER: self._attempts(message) + 1, "x-unionhub-error": error[:1000],
                        "x-unionhub-queue": self.queue.name,
                        "x-unionhub-failed-at": events.rfc3339(clock.now())})
        try:
            with Connection(self.amqp_uri, transport_options={"confirm_publish": True}) as conn:
                conn.Producer().publish(message.body, exchange="", routing_key=self.dead_queue.name,
                                        headers=headers, content_type=message.content_type or "application/data",
                                        content_encoding=message.content_encoding or "binary", delivery_mode=2,
                                        retry=True, retry_policy={"max_retries": 3})
        except Exception:
            log.exception("could not dead-letter an undecodable message; requeueing")
            message.requeue()
            return
        self.dead_lettered += 1
        message.ack()

    def _park(self, message, body, error, attempts):
        log.error("parking message in %s after %d attempt(s): %s", self.dead_queue.name, attempts, error[:300])
        try:
            headers = dict(message.headers or {})
            headers.update({ATTEMPTS_HEADER: attempts, "x-unionhub-error": error[:1000],
                            "x-unionhub-queue": self.queue.name,
                            "x-unionhub-failed-at": events.rfc3339(clock.now())})
            self.publisher.publish(body, exchange="", routing_key=self.dead_queue.name, extra_headers=headers)
        except Exception:
            log.exception("could not dead-letter; requeueing")
            self.queue_consumer.requeue_message(message)
            return
        self.dead_lettered += 1
        self.queue_consumer.ack_message(message)


def on_event(source, event=None):
    """``@on_event("membership", "member_joined")`` or ``@on_event(topology.ALL)``."""
    if event is None:
        return ReliableEventHandler.decorator(source)
    return ReliableEventHandler.decorator((source, event))


class _Duplicate(Exception):
    pass


def _processed_key(envelope, handler):
    key = "%s|%s" % (envelope["source"], envelope["id"])
    return "%s|%s" % (handler, key) if handler else key


def run_once_many(db, envelopes, fn, handler=None, attempts=5):
    """The batch form of ``run_once`` (a group commit of one handler's events): ``fn(session, fresh)`` with the
    envelopes not recorded before (each once, however often it is in the batch), in one transaction that records
    them all with one ``insert_many``. An event recorded before (a redelivery) or meanwhile by another replica aborts
    the transaction (a duplicate key); the batch is then sorted again without it."""
    keys = [_processed_key(env, handler) for env in envelopes]
    for attempt in range(attempts):
        # first optimistically (a redelivered event is rare: its record's unique _id aborts the transaction and the
        # batch is sorted then), which saves every batch a read of the records
        done = {d["_id"] for d in db.processed_events.find({"_id": {"$in": keys}}, {"_id": 1})} if attempt else set()
        fresh = {}
        for key, env in zip(keys, envelopes):
            if key not in done:
                fresh.setdefault(key, env)
        if not fresh:
            return

        def txn(session):
            now, by = clock.now(), config.get("UNIONHUB_REPLICA")
            db.processed_events.insert_many([{"_id": key, "type": env["type"], "at": now, "by": by}
                                             for key, env in fresh.items()], session=session)
            fn(session, list(fresh.values()))
        try:
            transaction(db, txn, timeout=background_timeout())
            return
        except DuplicateKeyError:
            continue
        except BulkWriteError as exc:  # insert_many's form of a duplicate record
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
            continue
    raise RuntimeError("events of this batch kept being recorded concurrently")


def run_once(db, envelope, fn, handler=None):
    """Run ``fn(session)`` in a transaction that also records ``(handler, source, id)``; skip if already recorded.

    The handler is part of the key: two handlers of one service that receive the same event (for example
    ``on_member_joined`` and ``on_any_event``) each apply it once.
    """
    key = _processed_key(envelope, handler)
    if db.processed_events.find_one({"_id": key}, {"_id": 1}):
        return None

    def txn(session):
        try:
            db.processed_events.insert_one({"_id": key, "type": envelope["type"], "at": clock.now(),
                                            "by": config.get("UNIONHUB_REPLICA")}, session=session)
        except DuplicateKeyError:
            raise _Duplicate()
        return fn(session)

    try:
        return transaction(db, txn, timeout=background_timeout())
    except _Duplicate:
        return None


def idempotent(fn):
    """Decorate ``handler(self, event, session)``; the service's Mongo dependency must be called ``db``."""
    @functools.wraps(fn)
    def wrapper(self, event):
        return run_once(self.db, event, lambda session: fn(self, event, session), handler=fn.__name__)
    return wrapper

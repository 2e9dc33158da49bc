"""RPC with a timeout. nameko 2.14's in-service ``RpcProxy`` waits for ever; this one does not.

A service with no consumer on its RPC queue raises ``ServiceUnavailable`` (503) at once (``has_consumer``: the
queue's consumer count, asked of the broker at most once a second per service and process). A reply later than
``RPC_TIMEOUT`` seconds raises ``ServiceTimeout`` (504): the call **may still be carried out** (it may be running, or
waiting for the store), so the 504 tells the client to retry with the same ``Idempotency-Key``. Remote ``AppError``
subclasses come back as themselves (see ``errors``); on the serving side a store that does not answer in time
becomes ``ServiceUnavailable`` (``rpc``). Calls that carry an affinity key reach the same replica
(``with_affinity``, ``affinity_rpc``: ``unionhub_kit.affinity``).
"""
import inspect
import logging
import time
import uuid

import sys

import amqp.exceptions
import eventlet
import eventlet.semaphore
import kombu
import kombu.exceptions
import kombu.serialization
from kombu import Queue
from nameko.constants import AMQP_SSL_CONFIG_KEY, DEFAULT_SERIALIZER, LOGIN_METHOD_CONFIG_KEY, SERIALIZER_CONFIG_KEY
from nameko.exceptions import IncorrectSignature, UnserializableValueError, serialize
from nameko.extensions import ProviderCollector
from nameko.rpc import (MethodProxy, Responder, Rpc as NamekoRpc, RpcConsumer, RpcProxy, RpcReply, ServiceProxy,
                        get_rpc_exchange)

from . import affinity, config
from .errors import ServiceTimeout, ServiceUnavailable

log = logging.getLogger("unionhub.rpc")

CONSUMER_CHECK_SECONDS = 1.0
_consumers = {}  # (amqp uri, queue) -> (checked at, consumer count)


_check_channels = {}  # amqp uri -> (connection, channel) kept open for the consumer counts
_check_lock = eventlet.semaphore.Semaphore()


def _consumer_count(amqp_uri, queue):
    """The consumer count of ``queue``, asked on one connection kept open per process (opening a connection for
    each check cost the gateway ~4% of its CPU under load, and the broker as much again)."""
    from kombu import Connection
    with _check_lock, eventlet.Timeout(2):  # a half-open connection cannot hold the others up
        held = _check_channels.get(amqp_uri)
        try:
            if held is None:
                conn = Connection(amqp_uri, connect_timeout=2, heartbeat=0)
                held = _check_channels[amqp_uri] = (conn, conn.channel())
            return held[1].queue_declare(queue=queue, passive=True).consumer_count
        except BaseException:  # eventlet.Timeout is not an Exception
            # a passive declare of a missing queue closes the channel (404); a broken connection the same: start
            # afresh next time
            _check_channels.pop(amqp_uri, None)
            if held is not None:
                try:
                    held[0].release()
                except Exception:
                    pass
            raise


def has_consumer(amqp_uri, service_name):
    """Whether some replica of ``service_name`` consumes its RPC queue (a yes is cached ``CONSUMER_CHECK_SECONDS``); a
    queue that does not exist has none. When the broker cannot say (a hiccup), assume yes: the call then times out."""
    key = (amqp_uri, "rpc-%s" % service_name)
    now = time.monotonic()
    cached = _consumers.get(key)
    # a count of zero is asked again at every call (the service may be starting this instant; while it is down,
    # one small broker round trip per refused call), a positive one once a second
    if cached is None or cached[1] == 0 or now - cached[0] > CONSUMER_CHECK_SECONDS:
        _consumers[key] = (now, cached[1] if cached else 1)  # one refresh at a time; others use the last answer
        try:
            count = _consumer_count(amqp_uri, key[1])
        except amqp.exceptions.NotFound:  # no such queue: the service never started here
            count = 0
        except (Exception, eventlet.Timeout) as exc:
            log.debug("consumer count of %s unknown: %s", key[1], exc)
            count = 1
        cached = _consumers[key] = (time.monotonic(), count)
    return cached[1] > 0


class Channels:
    """RPC requests and replies published on a few broker channels kept open per process (one connection each, so
    two green threads never interleave frames on a socket), without publisher confirms.

    nameko's ``Publisher`` builds a ``Connection`` object, takes a producer from a kombu pool and wraps the publish
    in retry machinery on every call, then waits for the broker's confirm: ~210-270 us of CPU a publish in this
    process (measured: 2,000 publishes, ``resource.getrusage``), against ~65 us for a held producer without
    confirms. Requests and replies are the hot path of every HTTP request (two publishes each). Without confirms an
    unroutable request is not detected by the broker: ``has_consumer`` tells a service with no consumer (or no
    queue) at once (503), and a request or reply lost by a broker crash is the caller's 504, which names the call
    as possibly applied and to be retried with the same Idempotency-Key."""

    KEEP = 8  # channels kept per broker URI (more are opened under a burst, and closed when given back)

    def __init__(self):
        self.free = {}  # amqp uri -> [(connection, producer)]

    def publish(self, amqp_uri, body, exchange, routing_key, **properties):
        free = self.free.setdefault(amqp_uri, [])
        held = free.pop() if free else None
        if held is None:
            conn = kombu.Connection(amqp_uri, connect_timeout=5, heartbeat=0)
            held = (conn, kombu.Producer(conn.channel(), serializer="json"))
        try:
            held[1].publish(body, exchange=exchange, routing_key=routing_key, retry=False, **properties)
        except BaseException:
            _close(held[0])
            raise
        if len(free) < self.KEEP:
            free.append(held)
        else:
            _close(held[0])

    def close(self):
        for free in self.free.values():
            while free:
                _close(free.pop()[0])


def _close(conn):
    try:
        conn.release()
    except Exception:
        pass


CHANNELS = Channels()


def timeout_message(label, timeout):
    return ("%s did not answer within %ss. The request may have been applied (or may still be): retry it with the "
            "same Idempotency-Key to get its result without applying it twice." % (label, timeout))


class TimedReply(RpcReply):
    def __init__(self, reply_event, timeout, cancel, label):
        super().__init__(reply_event)
        self.timeout = timeout
        self.cancel = cancel
        self.label = label

    def result(self):
        if self.resp_body is None:
            body = None
            with eventlet.Timeout(self.timeout, False):
                body = self.reply_event.wait()
            if body is None:
                self.cancel()
                raise ServiceTimeout(timeout_message(self.label, self.timeout))
            self.resp_body = body
        return super().result()


class TimedMethodProxy(MethodProxy):
    def __init__(self, worker_ctx, service_name, method_name, reply_listener, timeout=None, affinity_key=None,
                 **options):
        self.timeout = timeout
        self.affinity_key = affinity_key
        super().__init__(worker_ctx, service_name, method_name, reply_listener, **options)

    def _call(self, *args, **kwargs):
        # nameko's MethodProxy._call, plus: remember the correlation id so a timed-out call can be forgotten; with an
        # affinity key, published to the service's affinity exchange (which falls through to nameko's exchange
        # while no replica is bound to it: unionhub_kit.affinity)
        cfg = self.container.config
        exchange = get_rpc_exchange(cfg)
        amqp_uri = config.get("AMQP_URI", cfg)
        if not has_consumer(amqp_uri, self.service_name):
            raise ServiceUnavailable("%s is not running (no consumer on its queue)." % self.service_name)
        keyed = self.affinity_key is not None and config.get("RPC_AFFINITY", cfg)
        target, extra = affinity.route(
            self.service_name, exchange.name, self.affinity_key,
            keyed and affinity.available(amqp_uri, affinity.exchange(self.service_name, exchange.name)))
        headers = self.get_message_headers(self.worker_ctx)
        headers.update(extra)
        routing_key = "%s.%s" % (self.service_name, self.method_name)
        listener = self.reply_listener
        correlation_id = str(uuid.uuid4())
        reply_event = listener.get_reply_event(correlation_id)
        try:
            CHANNELS.publish(amqp_uri, {"args": args, "kwargs": kwargs}, target, routing_key,
                             reply_to=listener.routing_key, correlation_id=correlation_id,
                             headers=headers, delivery_mode=1,
                             # a request nobody took within the timeout is dropped by the broker (one that was
                             # taken may still be carried out after the 504: see timeout_message)
                             expiration=self.timeout)
        except (IOError, OSError, amqp.exceptions.AMQPError, kombu.exceptions.KombuError) as exc:
            listener._reply_events.pop(correlation_id, None)
            raise ServiceUnavailable("the broker is not reachable: %s" % exc)
        return TimedReply(reply_event, self.timeout, lambda: listener._reply_events.pop(correlation_id, None),
                          routing_key)


class TimedServiceProxy(ServiceProxy):
    def __init__(self, worker_ctx, service_name, reply_listener, timeout, affinity_key=None, **options):
        self.timeout = timeout
        self.affinity_key = affinity_key
        super().__init__(worker_ctx, service_name, reply_listener, **options)

    def __getattr__(self, name):
        return TimedMethodProxy(self.worker_ctx, self.service_name, name, self.reply_listener,
                                timeout=self.timeout, affinity_key=self.affinity_key, **self.options)

    def with_affinity(self, key):
        """This proxy, its calls carrying ``key``: every call with the same key reaches the same replica of the
        service when the replicas serve the method with ``@affinity_rpc`` too, else the shared queue as any call
        (``unionhub_kit.affinity``; called through ``affinity.with_affinity``)."""
        return TimedServiceProxy(self.worker_ctx, self.service_name, self.reply_listener, self.timeout,
                                 affinity_key=key, **self.options)


_signatures = {}  # (service class, method) -> inspect.Signature


def check_signature(entrypoint, args, kwargs):
    """nameko's ``Entrypoint.check_signature`` (a call with arguments the method cannot take is refused with
    ``IncorrectSignature``), with the method's signature computed once instead of on every call
    (``inspect.getcallargs`` rebuilds it: ~10% of the gateway's CPU per request, measured with py-spy)."""
    key = (entrypoint.container.service_cls, entrypoint.method_name)
    sig = _signatures.get(key)
    if sig is None:
        sig = _signatures[key] = inspect.signature(getattr(key[0], key[1]))
    try:
        sig.bind(None, *args, **kwargs)
    except TypeError as exc:
        raise IncorrectSignature(str(exc))


class _Responder(Responder):
    """nameko's reply, published transient on a held channel without waiting for the broker's confirm
    (``Channels``): the reply goes to the caller's own non-durable reply queue, so persistence buys nothing, and a
    confirm only costs a round trip and CPU on both sides. The result is serialized once (nameko serialized it
    twice: a check, then the publish)."""

    def send_response(self, result, exc_info):
        error = None if exc_info is None else serialize(exc_info[1])
        content_type = self.message.properties["content_type"]
        serializer = kombu.serialization.registry.type_to_name[content_type]
        try:
            _, _, body = kombu.serialization.dumps({"result": result, "error": error}, serializer)
        except Exception:  # the result cannot be serialized: the caller gets an error that can
            exc_info = sys.exc_info()
            error = serialize(UnserializableValueError(result))
            result = None
            _, _, body = kombu.serialization.dumps({"result": None, "error": error}, serializer)
        CHANNELS.publish(self.amqp_uri, body, self.exchange.name, self.message.properties["reply_to"],
                         correlation_id=self.message.properties.get("correlation_id"), content_type=content_type,
                         content_encoding="utf-8", delivery_mode=1)
        return result, exc_info


class _RpcConsumer(RpcConsumer):
    """nameko's shared RPC consumer, answering with ``_Responder``."""

    def handle_result(self, message, result, exc_info):
        cfg = self.container.config
        responder = _Responder(config.get("AMQP_URI", cfg), get_rpc_exchange(cfg),
                               cfg.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER), message,
                               ssl=cfg.get(AMQP_SSL_CONFIG_KEY), login_method=cfg.get(LOGIN_METHOD_CONFIG_KEY))
        result, exc_info = responder.send_response(result, exc_info)
        self.queue_consumer.ack_message(message)
        return result, exc_info


class StoreAwareRpc(NamekoRpc):
    """nameko's RPC entrypoint; a store error that means "no answer in time / unreachable" is answered as
    ``ServiceUnavailable`` (503) instead of an unexpected error (500). Replies go without publisher confirms
    (``_Responder``) and the signature check is cached (``check_signature``)."""

    rpc_consumer = _RpcConsumer()
    check_signature = check_signature

    def unpack_message_headers(self, message):
        """The worker's context from the request's headers, without the affinity key (only the broker reads it;
        kept, it would travel on in the headers of every call this worker makes)."""
        data = super().unpack_message_headers(message)
        data.pop(affinity.HEADER, None)
        return data

    def handle_result(self, message, worker_ctx, result, exc_info):
        from .mongo import unavailable
        if exc_info is not None and unavailable(exc_info[1]):
            err = ServiceUnavailable("The store did not answer in time (%s); try again." % type(exc_info[1]).__name__)
            exc_info = (type(err), err, exc_info[2])
        return super().handle_result(message, worker_ctx, result, exc_info)


def rpc(fn=None, **kwargs):
    """nameko's ``@rpc`` with ``AppError`` as an expected exception (a client error is not logged as a crash) and
    store timeouts answered as 503."""
    return _decorate(StoreAwareRpc, fn, kwargs)


def _decorate(entrypoint, fn, kwargs):
    from .errors import AppError
    kwargs.setdefault("expected_exceptions", AppError)
    decorator = entrypoint.decorator(**kwargs)
    return decorator if fn is None else decorator(fn)


class _AffinityRpcConsumer(_RpcConsumer):
    """The consumer of a replica's own affinity queue (``unionhub_kit.affinity``): exclusive, auto-deleted, bound
    to the service's affinity exchange with weight 1, consumed on the container's one broker connection beside the
    shared queue. Requests keep their routing key (``<service>.<method>``) and are dispatched as from the shared
    queue.

    Decided once at setup: with ``RPC_AFFINITY`` off, or when the exchange cannot be declared (a broker without the
    consistent-hash plugin answers by closing the connection, which on the container's consuming connection would
    stop every consumer of the service, retrying for ever), no queue is registered and the service serves from the
    shared queue alone (a warning logged). A replica that stops cancels its consumer, which deletes the queue
    (``auto_delete``) and its binding at once: later requests of its keys go to the other replicas (or fall
    through to the shared queue), while the workers it has running still answer theirs. A replica that dies takes
    its queue with the requests it had taken and not answered: their callers get the RPC timeout's 504, as with a
    replica dying mid-call on the shared queue."""

    def __init__(self):
        super().__init__()
        self.serving = False

    def setup(self):
        if self.queue is not None or self.serving:
            return
        cfg = self.container.config
        service = self.container.service_name
        if not config.get("RPC_AFFINITY", cfg):
            log.info("RPC affinity off for %s (RPC_AFFINITY): served from the shared queue only", service)
            return
        ex = affinity.exchange(service, get_rpc_exchange(cfg).name)
        if not affinity.declare(config.get("AMQP_URI", cfg), ex, "the %s service" % service):
            return
        self.queue = Queue(affinity.queue_name(service, uuid.uuid4().hex[:12]), exchange=ex,
                           routing_key=affinity.WEIGHT, durable=False, exclusive=True, auto_delete=True)
        self.serving = True
        self.queue_consumer.register_provider(self)
        log.info("RPC affinity on for %s: serving %s from %s too", service, self.queue.name, ex.name)

    def stop(self):
        if self.serving:
            super().stop()

    def unregister_provider(self, provider):
        if self.serving:
            super().unregister_provider(provider)
        else:  # never registered with the queue consumer: only forget the entrypoint
            ProviderCollector.unregister_provider(self, provider)


class AffinityRpc(StoreAwareRpc):
    """``StoreAwareRpc`` on the replica's affinity queue (``_AffinityRpcConsumer``)."""

    rpc_consumer = _AffinityRpcConsumer()


def affinity_rpc(fn=None, **kwargs):
    """``@affinity_rpc`` beside ``@rpc`` on a method: calls made ``with_affinity(proxy, key)`` reach the replica
    the key hashes to; ``@rpc`` still serves calls without a key and what falls through to the shared queue
    (affinity off, no replica bound yet). The same expected exceptions as ``rpc``."""
    return _decorate(AffinityRpc, fn, kwargs)


class Rpc(RpcProxy):
    """``membership = Rpc("membership")``; ``timeout`` defaults to the ``RPC_TIMEOUT`` config (seconds)."""

    def __init__(self, target_service, timeout=None, **options):
        self.timeout = timeout
        super().__init__(target_service, **options)

    def get_dependency(self, worker_ctx):
        timeout = self.timeout or config.get("RPC_TIMEOUT", self.container.config)
        return TimedServiceProxy(worker_ctx, self.target_service, self.rpc_reply_listener, timeout, **self.options)

"""RPC with a timeout. nameko 2.14's in-service ``RpcProxy`` waits for ever; this one does not.

A service with no consumer on its RPC queue raises ``ServiceUnavailable`` (503) at once (``has_consumer``: the
queue's consumer count, asked of the broker at most once a second per service and process). A reply later than
``RPC_TIMEOUT`` seconds raises ``ServiceTimeout`` (504): the call **may still be carried out** (it may be running, or
waiting for the store), so the 504 tells the client to retry with the same ``Idempotency-Key``. Remote ``AppError``
subclasses come back as themselves (see ``errors``); on the serving side a store that does not answer in time
becomes ``ServiceUnavailable`` (``rpc``).
"""
import logging
import time
import uuid

import eventlet
from nameko.amqp.publish import UndeliverableMessage
from nameko.rpc import MethodProxy, Rpc as NamekoRpc, RpcProxy, RpcReply, ServiceProxy, get_rpc_exchange

from . import config
from .errors import ServiceTimeout, ServiceUnavailable

log = logging.getLogger("unionhub.rpc")

CONSUMER_CHECK_SECONDS = 1.0
_consumers = {}  # (amqp uri, queue) -> (checked at, consumer count)


def _consumer_count(amqp_uri, queue):
    from kombu import Connection
    with Connection(amqp_uri, connect_timeout=2) as conn:
        return conn.default_channel.queue_declare(queue=queue, passive=True).consumer_count


def has_consumer(amqp_uri, service_name):
    """Whether some replica of ``service_name`` consumes its RPC queue (cached ``CONSUMER_CHECK_SECONDS``). When the
    broker cannot say (queue not declared yet, broker hiccup), assume yes: the call then times out as before."""
    key = (amqp_uri, "rpc-%s" % service_name)
    now = time.monotonic()
    cached = _consumers.get(key)
    if cached is None or now - cached[0] > CONSUMER_CHECK_SECONDS:
        _consumers[key] = (now, cached[1] if cached else 1)  # one refresh at a time; others use the last answer
        try:
            count = _consumer_count(amqp_uri, key[1])
        except Exception as exc:
            log.debug("consumer count of %s unknown: %s", key[1], exc)
            count = 1
        cached = _consumers[key] = (time.monotonic(), count)
    return cached[1] > 0


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
    def __init__(self, worker_ctx, service_name, method_name, reply_listener, timeout=None, **options):
        self.timeout = timeout
        super().__init__(worker_ctx, service_name, method_name, reply_listener, **options)

    def _call(self, *args, **kwargs):
        # nameko's MethodProxy._call, plus: remember the correlation id so a timed-out call can be forgotten
        exchange = get_rpc_exchange(self.container.config)
        amqp_uri = config.get("AMQP_URI", self.container.config)
        if not has_consumer(amqp_uri, self.service_name):
            raise ServiceUnavailable("%s is not running (no consumer on its queue)." % self.service_name)
        routing_key = "%s.%s" % (self.service_name, self.method_name)
        listener = self.reply_listener
        correlation_id = str(uuid.uuid4())
        reply_event = listener.get_reply_event(correlation_id)
        try:
            self.publisher.publish({"args": args, "kwargs": kwargs}, exchange=exchange, routing_key=routing_key,
                                   mandatory=True, reply_to=listener.routing_key, correlation_id=correlation_id,
                                   extra_headers=self.get_message_headers(self.worker_ctx),
                                   # a request nobody took within the timeout is dropped by the broker (one
                                   # that was taken may still be carried out after the 504: see timeout_message)
                                   expiration=self.timeout)
        except UndeliverableMessage:
            listener._reply_events.pop(correlation_id, None)
            raise ServiceUnavailable("%s is not running." % self.service_name)
        except (IOError, OSError) as exc:
            listener._reply_events.pop(correlation_id, None)
            raise ServiceUnavailable("the broker is not reachable: %s" % exc)
        return TimedReply(reply_event, self.timeout, lambda: listener._reply_events.pop(correlation_id, None),
                          routing_key)


class TimedServiceProxy(ServiceProxy):
    def __init__(self, worker_ctx, service_name, reply_listener, timeout, **options):
        self.timeout = timeout
        super().__init__(worker_ctx, service_name, reply_listener, **options)

    def __getattr__(self, name):
        return TimedMethodProxy(self.worker_ctx, self.service_name, name, self.reply_listener,
                                timeout=self.timeout, **self.options)


class StoreAwareRpc(NamekoRpc):
    """nameko's RPC entrypoint; a store error that means "no answer in time / unreachable" is answered as
    ``ServiceUnavailable`` (503) instead of an unexpected error (500)."""

    def handle_result(self, message, worker_ctx, result, exc_info):
        from .mongo import unavailable
        if exc_info is not None and unavailable(exc_info[1]):
            err = ServiceUnavailable("The store did not answer in time (%s); try again." % type(exc_info[1]).__name__)
            exc_info = (type(err), err, exc_info[2])
        return super().handle_result(message, worker_ctx, result, exc_info)


def rpc(fn=None, **kwargs):
    """nameko's ``@rpc`` with ``AppError`` as an expected exception (a client error is not logged as a crash) and
    store timeouts answered as 503."""
    from .errors import AppError
    kwargs.setdefault("expected_exceptions", AppError)
    decorator = StoreAwareRpc.decorator(**kwargs)
    return decorator if fn is None else decorator(fn)


class Rpc(RpcProxy):
    """``membership = Rpc("membership")``; ``timeout`` defaults to the ``RPC_TIMEOUT`` config (seconds)."""

    def __init__(self, target_service, timeout=None, **options):
        self.timeout = timeout
        super().__init__(target_service, **options)

    def get_dependency(self, worker_ctx):
        timeout = self.timeout or config.get("RPC_TIMEOUT", self.container.config)
        return TimedServiceProxy(worker_ctx, self.target_service, self.rpc_reply_listener, timeout, **self.options)

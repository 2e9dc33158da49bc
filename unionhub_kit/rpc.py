"""RPC with a timeout. nameko 2.14's in-service ``RpcProxy`` waits for ever; this one does not.

A reply later than ``RPC_TIMEOUT`` seconds raises ``ServiceTimeout`` (504); a service with no consumer raises
``ServiceUnavailable`` (503). Remote ``AppError`` subclasses come back as themselves (see ``errors``).
"""
import uuid

import eventlet
from nameko.amqp.publish import UndeliverableMessage
from nameko.rpc import MethodProxy, RpcProxy, RpcReply, ServiceProxy, get_rpc_exchange

from . import config
from .errors import ServiceTimeout, ServiceUnavailable


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
                raise ServiceTimeout("%s did not answer within %ss." % (self.label, self.timeout))
            self.resp_body = body
        return super().result()


class TimedMethodProxy(MethodProxy):
    def __init__(self, worker_ctx, service_name, method_name, reply_listener, timeout=None, **options):
        self.timeout = timeout
        super().__init__(worker_ctx, service_name, method_name, reply_listener, **options)

    def _call(self, *args, **kwargs):
        # nameko's MethodProxy._call, plus: remember the correlation id so a timed-out call can be forgotten
        exchange = get_rpc_exchange(self.container.config)
        routing_key = "%s.%s" % (self.service_name, self.method_name)
        listener = self.reply_listener
        correlation_id = str(uuid.uuid4())
        reply_event = listener.get_reply_event(correlation_id)
        try:
            self.publisher.publish({"args": args, "kwargs": kwargs}, exchange=exchange, routing_key=routing_key,
                                   mandatory=True, reply_to=listener.routing_key, correlation_id=correlation_id,
                                   extra_headers=self.get_message_headers(self.worker_ctx),
                                   # a request nobody took within the timeout is dropped by the broker, so a
                                   # call the caller already answered 504 is not carried out later
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


def rpc(fn=None, **kwargs):
    """nameko's ``@rpc`` with ``AppError`` as an expected exception (a client error is not logged as a crash)."""
    from nameko.rpc import rpc as nameko_rpc

    from .errors import AppError
    kwargs.setdefault("expected_exceptions", AppError)
    decorator = nameko_rpc(**kwargs)
    return decorator if fn is None else decorator(fn)


class Rpc(RpcProxy):
    """``membership = Rpc("membership")``; ``timeout`` defaults to the ``RPC_TIMEOUT`` config (seconds)."""

    def __init__(self, target_service, timeout=None, **options):
        self.timeout = timeout
        super().__init__(target_service, **options)

    def get_dependency(self, worker_ctx):
        timeout = self.timeout or float(self.container.config.get("RPC_TIMEOUT") or config.get("RPC_TIMEOUT"))
        return TimedServiceProxy(worker_ctx, self.target_service, self.rpc_reply_listener, timeout, **self.options)

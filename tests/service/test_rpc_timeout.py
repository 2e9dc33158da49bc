"""The kit's timed RPC on the real broker: a slow or absent service answers in bounded time, and a request that
timed out is not carried out later when the service comes back."""
import time

import eventlet
import pytest
from nameko.testing.services import entrypoint_hook

from unionhub_kit.errors import ServiceTimeout, ServiceUnavailable
from unionhub_kit import rpc as rpc_module
from unionhub_kit.rpc import Rpc, rpc

CALLS = []


class Slow:
    name = "slowsvc"

    @rpc
    def work(self, tag, seconds=0):
        eventlet.sleep(seconds)
        CALLS.append(tag)
        return tag


class Caller:
    name = "caller"
    slow = Rpc("slowsvc", timeout=0.5)

    @rpc
    def call(self, tag, seconds=0):
        return self.slow.work(tag, seconds)


def test_slow_answer_times_out(container_factory, config):
    slow = container_factory(Slow, config)
    slow.start()
    caller = container_factory(Caller, config)
    caller.start()
    with entrypoint_hook(caller, "call") as call:
        assert call("fast") == "fast"
        started = time.time()
        with pytest.raises(ServiceTimeout):
            call("slow", 3)
        assert time.time() - started < 2.5


def test_absent_service_is_unavailable_and_expired_request_is_not_run_later(container_factory, config):
    caller = container_factory(Caller, config)
    caller.start()
    with entrypoint_hook(caller, "call") as call:
        with pytest.raises(ServiceUnavailable):
            call("nobody-home")  # no queue at all yet
    slow = container_factory(Slow, config)
    slow.start()
    slow.stop()  # its durable queue stays, with no consumer
    eventlet.sleep(rpc_module.CONSUMER_CHECK_SECONDS + 0.2)  # the consumer count is cached that long
    with entrypoint_hook(caller, "call") as call:
        started = time.time()
        with pytest.raises(ServiceUnavailable):  # at once: nobody consumes the queue
            call("while-down")
        # answered without waiting out the call's timeout (RPC_TIMEOUT is 5 s here); the margin is for a loaded
        # machine: this tells "refused at once" from "timed out", it is not a performance figure
        assert time.time() - started < config["RPC_TIMEOUT"] / 2
        # a count taken just before the consumer went (still cached): the request is published, times out, and
        # expires in the queue, so it is not carried out when the service comes back
        rpc_module._consumers[(config["AMQP_URI"], "rpc-slowsvc")] = (time.monotonic(), 1)
        with pytest.raises(ServiceTimeout):
            call("while-down-stale")
    eventlet.sleep(0.8)  # past the request's expiry
    again = container_factory(Slow, config)
    again.start()
    eventlet.sleep(rpc_module.CONSUMER_CHECK_SECONDS + 0.2)
    assert "while-down" not in CALLS and "while-down-stale" not in CALLS
    with entrypoint_hook(caller, "call") as call:
        assert call("after") == "after"

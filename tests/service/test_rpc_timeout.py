"""The kit's timed RPC on the real broker: a slow or absent service answers in bounded time, and a request that
timed out is not carried out later when the service comes back."""
import time

import eventlet
import pytest
from nameko.testing.services import entrypoint_hook

from unionhub_kit.errors import ServiceTimeout, ServiceUnavailable
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
    with entrypoint_hook(caller, "call") as call:
        with pytest.raises(ServiceTimeout):
            call("while-down")
    eventlet.sleep(0.8)  # past the request's expiry
    again = container_factory(Slow, config)
    again.start()
    eventlet.sleep(1.0)
    assert "while-down" not in CALLS
    with entrypoint_hook(caller, "call") as call:
        assert call("after") == "after"

"""The HTTP gateway: a Nameko service with one catch-all HTTP entrypoint handing requests to the route table.

It keeps nothing of its own. It authenticates (JWT, no call), authorises by role, validates every body and query,
then calls the owning service by RPC with a timeout.
"""
import time

from nameko.extensions import DependencyProvider
from nameko.web.handlers import http

from unionhub_kit.errors import AppError
from unionhub_kit.metrics import ServiceMetrics
from unionhub_kit.rpc import Rpc

from . import metrics
from . import routes  # noqa: F401  (registers every route)
from .framework import Router

ROUTER = Router()


class RequestId(DependencyProvider):
    """``gw.set_request_id(rid)``: the id then travels in the headers of every RPC call this worker makes."""

    def get_dependency(self, worker_ctx):
        def set_request_id(rid):
            worker_ctx.data["request_id"] = rid
        return set_request_id


class TimedRpc(Rpc):
    """An ``Rpc`` proxy whose calls are recorded in the gateway's RPC latency histogram."""

    def get_dependency(self, worker_ctx):
        return _Measured(super().get_dependency(worker_ctx), self.target_service)


class _Measured:
    def __init__(self, proxy, service):
        self._proxy = proxy
        self._service = service

    def __getattr__(self, method):
        target = getattr(self._proxy, method)

        def call(*args, **kwargs):
            started = time.perf_counter()
            outcome = "ok"
            try:
                return target(*args, **kwargs)
            except AppError as exc:
                outcome = exc.code if exc.status >= 500 else "client_error"
                raise
            except Exception:
                outcome = "error"
                raise
            finally:
                metrics.RPC_LATENCY.labels(self._service, method, outcome).observe(time.perf_counter() - started)
        return call


class GatewayService:
    name = "gateway"

    membership = TimedRpc("membership")
    benefits = TimedRpc("benefits")
    jobs = TimedRpc("jobs")
    notify = TimedRpc("notify")
    set_request_id = RequestId()
    service_metrics = ServiceMetrics()  # access log with the request id; :METRICS_PORT/metrics

    @http("GET,POST,PUT,PATCH,DELETE", "/<path:path>")
    def handle(self, request, path):
        return ROUTER.dispatch(self, request)

    @http("GET", "/")
    def root(self, request):
        return ROUTER.dispatch(self, request)

"""The HTTP gateway: a Nameko service with one catch-all HTTP entrypoint handing requests to the route table.

It keeps nothing of its own. It authenticates (JWT, no call), authorises by role, validates every body and query,
then calls the owning service by RPC with a timeout.
"""
import logging
import time
import uuid

from nameko.extensions import DependencyProvider
from nameko.timer import timer
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule
from werkzeug.wrappers import Request

from services.benefits.schemas import MAX_CLAIM_BATCH
from unionhub_kit.affinity import with_affinity
from unionhub_kit.batching import Batcher
from unionhub_kit.config import Settings
from unionhub_kit.errors import AppError
from unionhub_kit.metrics import ServiceMetrics
from unionhub_kit.rpc import Rpc

from . import metrics
from . import routes  # noqa: F401  (registers every route)
from .routes import benefits as benefits_routes
from .cache_events import CacheEvents
from .framework import Router, problem, problem_response
from .revocations import REVOCATIONS

log = logging.getLogger("unionhub.gateway")
REVOCATION_POLL_SECONDS = 1.0

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

    def with_affinity(self, key):
        """Measured too (``unionhub_kit.affinity.with_affinity``)."""
        return _Measured(with_affinity(self._proxy, key), self._service)

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


class _ProblemWsgiApp(WsgiApp):
    """nameko's WSGI app, but what its own URL map refuses (a path no rule matches, such as one holding a newline)
    is a problem document, not werkzeug's HTML page."""

    def __call__(self, environ, start_response):
        request = Request(environ, shallow=True)
        try:
            provider, values = self.url_map.bind_to_environ(environ).match()
            request.path_values = values
            rv = provider.handle_request(request)
        except HTTPException as exc:
            rv = problem_response(problem(exc.code or 400, "NOT_FOUND" if exc.code == 404 else "BAD_REQUEST",
                                          "No such route." if exc.code == 404 else "The request is not valid."),
                                  uuid.uuid4().hex)
        return rv(environ, start_response)


class _ProblemWebServer(WebServer):
    def get_wsgi_app(self):
        return _ProblemWsgiApp(self)


class AnyMethodHttp(HttpRequestHandler):
    """nameko's ``@http`` for every method: the route table answers an unknown method (405 problem document with
    ``Allow``, 204 with ``Allow`` to OPTIONS) instead of werkzeug's HTML page."""
    server = _ProblemWebServer()

    def __init__(self, url, **kwargs):
        super().__init__("ANY", url, **kwargs)

    def get_url_rule(self):
        return Rule(self.url, methods=None)

    def check_signature(self, args, kwargs):
        """The handlers take (request, path) by construction: nothing to check per request (nameko's check rebuilds
        the method's signature on every call)."""


any_method_http = AnyMethodHttp.decorator


class GatewayService:
    name = "gateway"

    membership = TimedRpc("membership")
    benefits = TimedRpc("benefits")
    jobs = TimedRpc("jobs")
    notify = TimedRpc("notify")
    stations = TimedRpc("stations")
    set_request_id = RequestId()
    setting = Settings()
    service_metrics = ServiceMetrics()  # access log with the request id; :METRICS_PORT/metrics
    cache_events = CacheEvents()  # benefits' stock events drop cached campaign answers (gateway.cache_events)
    # group commit of the claims of one campaign: one benefits.claim_many call per batch (routes.benefits.claim_batch)
    claims = Batcher(window_ms=benefits_routes.CLAIM_WINDOW_MS, max_size=MAX_CLAIM_BATCH,
                     lanes=benefits_routes.CLAIM_LANES, lane_at=benefits_routes.CLAIM_LANE_AT,
                     lane_wait_ms=benefits_routes.CLAIM_LANE_WAIT_MS)

    @timer(interval=REVOCATION_POLL_SECONDS, eager=True)
    def sync_revocations(self):
        """The revocations made through other gateways (see ``revocations``)."""
        try:
            REVOCATIONS.sync(self.membership)
        except Exception as exc:  # membership away: the next tick tries again (authorising waits for a first look)
            log.warning("could not fetch token revocations: %s", exc)

    @any_method_http("/<path:path>")
    def handle(self, request, path):
        return ROUTER.dispatch(self, request)

    @any_method_http("/")
    def root(self, request):
        return ROUTER.dispatch(self, request)

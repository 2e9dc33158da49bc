"""Service-side Prometheus metrics, per-process health and the access log.

Add one line to a service class::

    from unionhub_kit.metrics import ServiceMetrics

    class BenefitsService:
        name = "benefits"
        service_metrics = ServiceMetrics()

Every worker of every entrypoint of that service (RPC, event handler, HTTP, timer) is then

* timed into ``unionhub_entrypoint_seconds{service, entrypoint, kind, outcome}`` (a histogram; ``outcome`` is ``ok``,
  ``client_error`` for an ``AppError`` below 500, or ``error``) and counted in ``unionhub_entrypoint_errors_total``;
* logged as one access line (``rpc benefits.claim ok 3.1ms``) carrying the request id that came with the call or the
  event (``UNIONHUB_ACCESS_LOG=0`` turns the line off; the request id is set for the worker's own lines either way).

Read at scrape time: ``unionhub_outbox_backlog`` / ``unionhub_outbox_oldest_seconds`` (when the service has an
``Outbox``), ``unionhub_event_retries_total`` and ``unionhub_event_dead_lettered_total`` per reliable handler, plus
the process collector (CPU seconds, resident memory).

With ``METRICS_PORT`` set (0 or unset = off) the process serves ``/metrics`` and ``/healthz`` on it
(``METRICS_HOST``, default 127.0.0.1; containers set 0.0.0.0). Several processes on one machine with the same
``METRICS_PORT`` (``make run`` with replicas) take the next free port and log which one.
"""
import errno
import json
import logging
import re
import socket
import time
import weakref

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from nameko.extensions import DependencyProvider

from . import clock, config, logs
from .mongo import MongoClient

log = logging.getLogger("unionhub.metrics")
access = logging.getLogger("unionhub.access")

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
LATENCY = Histogram("unionhub_entrypoint_seconds", "Time a worker of an entrypoint took",
                    ["service", "entrypoint", "kind", "outcome"], registry=REGISTRY, buckets=BUCKETS)
ERRORS = Counter("unionhub_entrypoint_errors_total", "Workers that ended with an exception",
                 ["service", "entrypoint", "kind", "outcome"], registry=REGISTRY)

_providers = weakref.WeakSet()
_server = {"port": None, "thread": None}
_SEGMENT_OK = re.compile(r"^(?:[a-z_\-]+|v\d+)$")


def _kind(entrypoint):
    from nameko.rpc import Rpc
    from nameko.timer import Timer
    from nameko.web.handlers import HttpRequestHandler
    from .consumer import ReliableEventHandler
    for cls, kind in ((Rpc, "rpc"), (ReliableEventHandler, "event"), (HttpRequestHandler, "http"), (Timer, "timer")):
        if isinstance(entrypoint, cls):
            return kind
    return type(entrypoint).__name__.lower()


def outcome_of(exc_info):
    if exc_info is None:
        return "ok"
    from .errors import AppError
    exc = exc_info[1]
    if isinstance(exc, AppError) and (exc.status or 500) < 500:
        return "client_error"
    return "error"


def safe_path(path):
    """``/api/v1/coupons/AB12CD/redeem`` -> ``/api/v1/coupons/:x/redeem``: no ids, codes or tokens in logs."""
    return "/".join(s if (not s or _SEGMENT_OK.match(s)) else ":x" for s in path.split("/"))


class ServiceMetrics(DependencyProvider):
    """Times and counts every worker of the service; serves ``/metrics`` when ``METRICS_PORT`` is set."""

    store = MongoClient()  # the outbox backlog gauge (connects only in a service with an Outbox)

    def __init__(self, access_log=None):
        self.access_log = access_log
        self._started = {}
        self.service = None
        self.db = None
        self.outbox = False
        self.running = False

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def setup(self):
        self.service = self.container.service_name
        if self.access_log is None:
            self.access_log = config.get("UNIONHUB_ACCESS_LOG", self.container.config)
        from .outbox import Outbox
        self.outbox = any(isinstance(d, Outbox) for d in self.container.dependencies)
        if self.outbox:
            self.db = self.store.database
        _providers.add(self)
        port = config.get("METRICS_PORT", self.container.config)
        if port:
            serve(port, config.get("METRICS_HOST", self.container.config))

    def start(self):
        self.running = True

    def stop(self):
        self.running = False
        _providers.discard(self)

    def kill(self):
        self.stop()

    def get_dependency(self, worker_ctx):
        return self

    # ---- per worker ---------------------------------------------------------------------------------------------
    def worker_setup(self, worker_ctx):
        logs.set_request_id(worker_ctx.data.get("request_id"))
        self._started[id(worker_ctx)] = time.perf_counter()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started = self._started.pop(id(worker_ctx), None)
        if started is None:
            return
        seconds = time.perf_counter() - started
        ep = worker_ctx.entrypoint
        kind = _kind(ep)
        outcome = outcome_of(exc_info)
        if kind == "http" and exc_info is None and hasattr(result, "status_code"):
            outcome = "ok" if result.status_code < 400 else ("client_error" if result.status_code < 500 else "error")
        name = ep.method_name
        LATENCY.labels(self.service, name, kind, outcome).observe(seconds)
        if outcome != "ok":
            ERRORS.labels(self.service, name, kind, outcome).inc()
        if self.access_log:
            self._access(worker_ctx, kind, name, outcome, result, seconds)

    def worker_teardown(self, worker_ctx):
        self._started.pop(id(worker_ctx), None)

    def _access(self, worker_ctx, kind, name, outcome, result, seconds):
        try:
            rid = worker_ctx.data.get("request_id") or logs.get_request_id()
            if rid:
                logs.set_request_id(rid)
            if kind == "http" and worker_ctx.args:
                req = worker_ctx.args[0]
                status = getattr(result, "status_code", 500)
                access.info("http %s %s %s %.1fms", req.method, safe_path(req.path), status, seconds * 1000)
            else:
                access.info("%s %s.%s %s %.1fms", kind, self.service, name, outcome, seconds * 1000)
        except Exception:  # an access line must never fail a worker
            pass

    # ---- scrape-time figures ------------------------------------------------------------------------------------
    def collect_into(self, fams):
        from .consumer import ReliableEventHandler
        for ep in self.container.entrypoints:
            if isinstance(ep, ReliableEventHandler):
                fams["retries"].add_metric([self.service, ep.method_name], getattr(ep, "retries", 0))
                fams["dead"].add_metric([self.service, ep.method_name], getattr(ep, "dead_lettered", 0))
        if self.outbox and self.db is not None:
            try:
                fams["backlog"].add_metric([self.service], self.db.outbox.count_documents({"published_at": None}))
                oldest = self.db.outbox.find_one({"published_at": None}, {"created_at": 1}, sort=[("_id", 1)])
                age = (clock.now() - oldest["created_at"]).total_seconds() if oldest else 0.0
                fams["oldest"].add_metric([self.service], max(0.0, age))
            except Exception as exc:
                log.warning("outbox metrics of %s unavailable: %s", self.service, exc)


class _KitCollector:
    def collect(self):
        fams = {
            "retries": CounterMetricFamily("unionhub_event_retries", "Handler failures scheduled for a retry",
                                           labels=["service", "handler"]),
            "dead": CounterMetricFamily("unionhub_event_dead_lettered", "Messages parked in a dead-letter queue",
                                        labels=["service", "handler"]),
            "backlog": GaugeMetricFamily("unionhub_outbox_backlog", "Outbox events not yet published",
                                         labels=["service"]),
            "oldest": GaugeMetricFamily("unionhub_outbox_oldest_seconds", "Age of the oldest unpublished event",
                                        labels=["service"]),
        }
        for p in list(_providers):
            p.collect_into(fams)
        return list(fams.values())


REGISTRY.register(_KitCollector())


def render():
    """The process's metrics in the Prometheus text format."""
    return generate_latest(REGISTRY)


def _app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/metrics":
        body, ctype, status = render(), "text/plain; version=0.0.4; charset=utf-8", "200 OK"
    elif path in ("/healthz", "/livez"):
        running = [p.service for p in list(_providers) if p.running]
        ok = bool(running)
        body = json.dumps({"status": "ok" if ok else "stopped", "services": running,
                           "replica": config.get("UNIONHUB_REPLICA") or socket.gethostname()}).encode()
        ctype, status = "application/json", "200 OK" if ok else "503 Service Unavailable"
    else:
        body, ctype, status = b"not found\n", "text/plain", "404 Not Found"
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def serve(port, host="127.0.0.1", tries=20):
    """Serve ``/metrics`` and ``/healthz`` once per process on ``port`` (or the next free one); return the port."""
    if _server["port"]:
        return _server["port"]
    import eventlet
    import eventlet.wsgi
    sock = None
    for p in range(port, port + tries):
        try:
            sock = eventlet.listen((host, p))
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    if sock is None:
        log.warning("metrics: no free port in %d..%d; not serving metrics", port, port + tries - 1)
        return None
    _server["port"] = sock.getsockname()[1]
    _server["thread"] = eventlet.spawn(eventlet.wsgi.server, sock, _app, log_output=False, debug=False)
    log.info("metrics on http://%s:%d/metrics", host, _server["port"])
    return _server["port"]

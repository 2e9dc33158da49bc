"""Prometheus metrics of the gateway: requests, latency histograms and errors by route; RPC latencies.

They live in the kit's registry, so the gateway's ``METRICS_PORT`` (not the public port) serves them with the
process and entrypoint metrics; the public ``/metrics`` answers only a scraper holding ``METRICS_TOKEN``.
"""
from prometheus_client import Counter, Histogram

from unionhub_kit.metrics import REGISTRY, render  # noqa: F401  (render: the public route's answer)

REQUESTS = Counter("unionhub_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=REGISTRY)
ERRORS = Counter("unionhub_http_errors_total", "HTTP answers >= 400", ["method", "route", "status"],
                 registry=REGISTRY)
LATENCY = Histogram("unionhub_http_request_seconds", "HTTP latency", ["method", "route"], registry=REGISTRY,
                    buckets=(.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
RPC_LATENCY = Histogram("unionhub_rpc_seconds", "RPC latency seen by the gateway", ["service", "method", "outcome"],
                        registry=REGISTRY, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))


def observe(method, route, status, seconds):
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)
    if status >= 400:
        ERRORS.labels(method, route, str(status)).inc()


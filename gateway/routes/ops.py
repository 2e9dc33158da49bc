"""Operations routes: health, readiness, metrics, OpenAPI, docs page, AsyncAPI."""
import hmac

import eventlet
import swagger_ui_bundle
from kombu import Connection
from werkzeug.wrappers import Response

from unionhub_kit import config
from unionhub_kit.errors import AppError

from .. import asyncapi, metrics, openapi
from ..framework import ROUTES, json_response, route

SERVICES = ("membership", "benefits", "jobs", "notify", "stations")
_cache = {}


@route("GET", "/healthz", summary="The gateway process is alive", raw=True)
def healthz(gw, call):
    return json_response({"status": "ok"})


def _check_broker(uri):
    try:
        with Connection(uri, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return None
    except Exception as exc:
        return str(exc)[:200]


@route("GET", "/readyz", summary="Ready: the broker answers and every service answers an RPC ping", raw=True)
def readyz(gw, call):
    checks = {}
    pool = eventlet.GreenPool()
    uri = gw.setting("AMQP_URI")
    broker = pool.spawn(_check_broker, uri)

    def ping(name):
        try:
            getattr(gw, name).ping()
            return None
        except AppError as exc:
            return exc.detail
        except Exception as exc:
            return str(exc)[:200]
    results = {name: pool.spawn(ping, name) for name in SERVICES}
    down = {}
    err = broker.wait()
    checks["broker"] = "ok" if err is None else "down"
    if err:
        down["broker"] = err
    for name, gt in results.items():
        err = gt.wait()
        checks[name] = "ok" if err is None else "down"
        if err:
            down[name] = err
    if down:
        doc = {"type": "about:blank", "status": 503, "title": "Service Unavailable", "code": "NOT_READY",
               "detail": "Not ready: %s." % ", ".join(sorted(down)), "checks": checks, "down": down}
        return json_response(doc, 503, content_type="application/problem+json")
    return json_response({"status": "ready", "checks": checks})


@route("GET", "/metrics", summary="Prometheus metrics, for a scraper holding METRICS_TOKEN (Authorization: Bearer); "
       "without one set, metrics are served on METRICS_PORT only", raw=True)
def prometheus(gw, call):
    token = config.get("METRICS_TOKEN") or ""
    if not token:
        raise AppError("No such route: /metrics (metrics are served on METRICS_PORT).", code="NOT_FOUND", status=404)
    given = call.request.headers.get("Authorization") or ""
    if not hmac.compare_digest(given.encode(), ("Bearer " + token).encode()):
        raise AppError("Send Authorization: Bearer <METRICS_TOKEN>.", code="UNAUTHORIZED", status=401)
    return Response(metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")


@route("GET", "/openapi.json", summary="This API as OpenAPI 3", raw=True)
def openapi_json(gw, call):
    if "openapi" not in _cache:
        _cache["openapi"] = openapi.build(ROUTES)
    return json_response(_cache["openapi"])


@route("GET", "/asyncapi.json", summary="The event catalogue as AsyncAPI 3", raw=True)
def asyncapi_json(gw, call):
    if "asyncapi" not in _cache:
        _cache["asyncapi"] = asyncapi.build()
    return json_response(_cache["asyncapi"])


DOCS = """<!doctype html><html><head><meta charset="utf-8"><title>UnionHub API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"><link rel="icon" href="/docs/favicon-32x32.png"></head>
<body><div id="ui"><p>Loading the API reference from <a href="/openapi.json">/openapi.json</a>&hellip;</p></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", deepLinking: true});</script>
</body></html>"""
# Swagger UI comes from the swagger-ui-bundle package, served by the gateway itself: /docs works without the internet
# (a CDN such as unpkg is slow or unreachable for many users in mainland China)
DOCS_ASSETS = {"swagger-ui.css": "text/css; charset=utf-8", "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
               "favicon-32x32.png": "image/png", "favicon-16x16.png": "image/png"}


@route("GET", "/docs", summary="API reference page", raw=True)
def docs(gw, call):
    return Response(DOCS, content_type="text/html; charset=utf-8")


@route("GET", "/docs/<asset>", summary="Swagger UI's files (from the swagger-ui-bundle package)", raw=True)
def docs_asset(gw, call):
    name = call.path_params["asset"]
    if name not in DOCS_ASSETS:
        raise AppError("No such file.", code="NOT_FOUND", status=404)
    if name not in _cache:
        _cache[name] = (swagger_ui_bundle.swagger_ui_path / name).read_bytes()
    resp = Response(_cache[name], content_type=DOCS_ASSETS[name])
    resp.headers["Cache-Control"] = "public, max-age=86400"
    return resp

"""Operations routes: health, readiness, metrics, OpenAPI, docs page, AsyncAPI."""
import eventlet
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
    uri = gw.membership._proxy.worker_ctx.container.config.get("AMQP_URI") or config.get("AMQP_URI")
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


@route("GET", "/metrics", summary="Prometheus metrics", raw=True)
def prometheus(gw, call):
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
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"><p>Loading the API reference from <a href="/openapi.json">/openapi.json</a>&hellip;</p>
<div id="fallback"></div></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>
if (window.SwaggerUIBundle) { SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"}); }
else { fetch("/openapi.json").then(r => r.json()).then(s => {
  const rows = Object.entries(s.paths).flatMap(([p, ops]) => Object.entries(ops).map(([m, o]) =>
    `<tr><td><b>${m.toUpperCase()}</b></td><td><code>${p}</code></td><td>${o.summary || ""}</td>
     <td>${(o["x-roles"] || ["anyone"]).join(", ")}</td></tr>`));
  document.getElementById("fallback").innerHTML = `<h1>${s.info.title} ${s.info.version}</h1>
   <table border=1 cellpadding=4><tr><th>method</th><th>path</th><th>what</th><th>who</th></tr>${rows.join("")}</table>`;
}); }
</script></body></html>"""


@route("GET", "/docs", summary="API reference page", raw=True)
def docs(gw, call):
    return Response(DOCS, content_type="text/html; charset=utf-8")

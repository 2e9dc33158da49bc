"""The gateway's small HTTP framework: a route table, authentication, validation and problem documents.

A route is declared once, next to its handler, and that declaration drives dispatch, role checks, body and query
validation, idempotency keys and the OpenAPI document::

    @route("POST", "/api/v1/members", roles=["member"], body=JoinSchema, status=201, idempotent=True,
           tags=["Membership"], summary="Join a union")
    def join(gw, req):
        return gw.membership.join(req.actor, req.body, req.idempotency_key)

``gw`` is the Nameko service instance (its RPC proxies: ``gw.membership`` ...); ``req`` is a ``Call``.
A handler returns the JSON body (serialised with the route's status) or a ``werkzeug.Response``.
"""
import hashlib
import ipaddress
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

import eventlet
from eventlet.event import Event
from marshmallow import ValidationError
from werkzeug.exceptions import MethodNotAllowed, NotFound as RouteNotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Response

from unionhub_kit import config, logs
from unionhub_kit.errors import AppError, Forbidden, validation_error
from unionhub_kit.schema import KEY_PATTERN

from . import auth, metrics
from .revocations import REVOCATIONS

log = logging.getLogger("unionhub.gateway")

MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # no request body of the API nests more than 4 deep
MAX_PATH_PARAM = 128
REQUEST_ID_RE = IDEMPOTENCY_KEY_RE = re.compile(KEY_PATTERN)  # services validate what they are handed with the same

ROUTES = []


@dataclass
class Route:
    method: str
    path: str  # werkzeug syntax, e.g. /api/v1/members/<id>/approve
    handler: object
    roles: tuple = None  # None = anyone (no token needed); otherwise one of these roles
    body: type = None
    query: type = None
    status: int = 200
    idempotent: bool = False
    summary: str = ""
    tags: tuple = ()
    response: type = None  # schema of the answer (documentation)
    errors: tuple = ()  # error codes this route may answer with (documentation)
    raw: bool = False  # handler returns a Response (docs, metrics)
    name: str = ""
    cache: object = None  # public GETs: seconds an answer may be reused (or f(answer) -> seconds, or -> (seconds
    # this gateway keeps it, seconds clients may: 0 = no-cache)); see ReadCache


def route(method, path, roles=None, body=None, query=None, status=200, idempotent=False, summary="", tags=(),
          response=None, errors=(), raw=False, cache=None):
    def deco(fn):
        ROUTES.append(Route(method, path, fn, tuple(roles) if roles else None, body, query, status, idempotent,
                            summary or (fn.__doc__ or "").strip().split("\n")[0], tuple(tags), response,
                            tuple(errors), raw, fn.__name__, cache))
        return fn
    return deco


class ReadCache:
    """Answers of public reads that do not depend on the caller, kept by this gateway process for a second or so
    (a route's ``cache``), each with a weak ``ETag``: a client that sends it back in ``If-None-Match`` gets a 304.

    Staleness is bounded three times:

    * by the route's seconds (``cache``: at most ``SHORT_CACHE_SECONDS``), the hard bound on anything missed;
    * by the writes this gateway passes on: a successful write under ``/api/v1/<resource>`` drops every cached read
      of that resource (for a claim: of that campaign and the lists, ``BY_ID``) before its answer leaves (the
      writer's next read is fresh);
    * by the services' events (``changed``, from ``gateway.cache_events``): a change announced by a service, made
      through another gateway replica or with no HTTP request at all, drops the reads of that one resource id and
      the resource's lists when the event reaches this process.

    An answer read while a write passed or a change was announced (its ``stamp`` moved) is answered but not kept.
    Answers a route's ``cache`` function gives 0 seconds are not kept, but still get an ETag
    (``Cache-Control: no-cache``: clients revalidate every time). Either is also the answer of the requests that
    came while it was being read with nothing changed in between (``get``): no request is answered with a read that
    started before a write this gateway passed on, or before an announced change, that the request came after."""

    MAX_ENTRIES = 5000
    BY_ID = frozenset({"campaigns"})  # a write under /<resource>/<id>/... changes that id and the lists only

    def __init__(self):
        self.entries = {}  # (path, query string) -> (valid until, body bytes, etag, max-age)
        self.keys_of = {}  # (resource, id or "" for its lists) -> the keys of its cached reads
        self.filling = {}  # key -> (stamp, Event): a read of it is on its way to the service (the others wait for it)
        self.generation = {}  # resource -> how many writes this gateway passed on (an answer read before one is not kept)
        self.changes = {}  # (resource, id or "") -> how many changes were announced by events (the same, finer)
        self.epoch = 0  # how many times ``changes`` was cleared (so a count that started again never matches)

    @staticmethod
    def resource(path):
        parts = path.split("/")
        return parts[3] if len(parts) > 3 else ""

    @staticmethod
    def group(path):
        """``(resource, id)`` of a read: ``/api/v1/campaigns/c1`` -> ``("campaigns", "c1")``; a list -> id ``""``."""
        parts = path.split("/")
        return (parts[3] if len(parts) > 3 else "", parts[4] if len(parts) > 4 else "")

    def stamp(self, path):
        """What must not move while a read of ``path`` is on its way for its answer to be kept."""
        group = self.group(path)
        return self.generation.get(group[0], 0), self.changes.get(group, 0), self.epoch

    def get(self, key, stamp, wait=5.0):
        """``(fresh entry or None, fill)``: ``fill`` is given when this request is to read the key and hand its
        answer to ``done``. A request that misses while another one's read of the key is on its way, and nothing
        changed since that read started (the same ``stamp``), waits for that read and is answered with it, kept or
        not (one RPC per key at a time, not one per connection); one that comes after a change starts a read of its
        own. ``(None, None)``: the read it waited for failed or took too long: it reads alone."""
        hit = self.entries.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit, None
        pending = self.filling.get(key)
        if pending is None or pending[0] != stamp:
            fill = self.filling[key] = (stamp, Event())
            return None, fill
        with eventlet.Timeout(wait, False):
            return pending[1].wait(), None
        return None, None

    def done(self, key, fill, hit=None):
        """The read ``fill`` of ``key`` has ended: hand its answer (``put``'s, or None when it failed) to whoever
        waits for it."""
        if self.filling.get(key) is fill:
            del self.filling[key]
        fill[1].send(hit)

    def put(self, key, data, seconds, stamp=None, max_age=None):
        """Keep ``data`` for ``seconds`` (0: not at all) unless ``stamp`` moved; answer it with ``max_age`` (default
        ``seconds``; 0: ``Cache-Control: no-cache``, for what only this gateway can keep honest)."""
        tag = 'W/"%s"' % hashlib.blake2b(data, digest_size=12).hexdigest()
        max_age = seconds if max_age is None else max_age
        if stamp is not None and stamp != self.stamp(key[0]):
            return (None, data, tag, max_age)  # a write passed by while this was read: answer it, do not keep it
        if seconds > 0:
            if len(self.entries) >= self.MAX_ENTRIES:
                self.entries.clear()
                self.keys_of.clear()
            self.entries[key] = (time.monotonic() + seconds, data, tag, max_age)
            self.keys_of.setdefault(self.group(key[0]), set()).add(key)
        return (None, data, tag, max_age)

    def _drop(self, group):
        for key in self.keys_of.pop(group, ()):
            self.entries.pop(key, None)

    def written(self, path):
        """A write under ``path`` succeeded through this gateway: every cached read of its resource goes, or, for a
        resource in ``BY_ID`` written under one id (a claim: ``/api/v1/campaigns/<id>/claims``), the reads of that
        id and the resource's lists (a flash grab on one campaign leaves the others' answers alone)."""
        res, ident = self.group(path)
        if ident and res in self.BY_ID:
            self.changed(res, ident)
            return
        self.generation[res] = self.generation.get(res, 0) + 1
        for group in [g for g in self.keys_of if g[0] == res]:
            self._drop(group)

    def changed(self, resource, ident):
        """A service announced a change of ``resource`` ``ident`` (an event): the cached reads of that id and of the
        resource's lists go, and a read of them already on its way is not kept. No store, no RPC: a few dict
        operations, on the path of every event of that kind."""
        for group in ((resource, ident), (resource, "")):
            self.changes[group] = self.changes.get(group, 0) + 1
            if group in self.keys_of:
                self._drop(group)
        if len(self.changes) >= self.MAX_ENTRIES:  # the counts of ids nobody reads any more
            self.changes.clear()
            self.epoch += 1

    def forget(self, resource):
        """Everything of ``resource`` (the events about it may have been missed): as a write through this gateway."""
        self.written("/api/v1/%s" % resource)

    @staticmethod
    def response(request, hit, request_id):
        _, data, tag, max_age = hit
        headers = {"ETag": tag, "Cache-Control": "public, max-age=%d" % max(1, int(max_age)) if max_age > 0
                   else "no-cache", "X-Request-Id": request_id}
        if tag in request.headers.get("If-None-Match", ""):
            return Response(status=304, headers=headers)
        resp = Response(data, status=200, content_type="application/json; charset=utf-8", headers=headers)
        return resp


READ_CACHE = ReadCache()
SHORT_CACHE_SECONDS = 1.0  # where a second of staleness is harmless (unions, fairs, job search, ended campaigns)


@dataclass
class Call:
    request: object
    path_params: dict
    request_id: str
    principal: object = None
    body: dict = None
    query: dict = field(default_factory=dict)
    idempotency_key: str = None

    @property
    def actor(self):
        """What services get to know of the caller (never the token itself)."""
        return self.principal.as_actor() if self.principal else None


_trusted = {}


def trusted_proxies():
    """``TRUSTED_PROXIES`` (comma-separated addresses or CIDRs; empty by default) as networks (parsed once)."""
    raw = config.get("TRUSTED_PROXIES")
    if raw not in _trusted:
        nets = []
        for item in filter(None, (x.strip() for x in raw.split(","))):
            nets.append(ipaddress.ip_network(item, strict=False))  # a bad entry stops the gateway at start
        _trusted.clear()
        _trusted[raw] = tuple(nets)
    return _trusted[raw]


def client_address(request):
    """The client's address: the socket peer, or, when the peer is a trusted proxy, the last address of its
    ``X-Forwarded-For`` (the one that proxy saw; the ones before it are the client's own say-so)."""
    peer = request.remote_addr or ""
    try:
        peer_ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer[:64] or None
    if any(peer_ip in net for net in trusted_proxies()):
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        if forwarded:
            try:
                return str(ipaddress.ip_address(forwarded[-1]))
            except ValueError:
                pass
    return str(peer_ip)


def problem(status, code, detail, errors=None, title=None):
    err = AppError(detail, code=code, status=status, errors=errors)
    doc = err.to_problem()
    if title:
        doc["title"] = title
    return doc


def json_response(body, status=200, request_id=None, content_type="application/json"):
    data = b"" if body is None else json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")
    resp = Response(data, status=status, content_type=content_type + ("; charset=utf-8" if data else ""))
    if request_id:
        resp.headers["X-Request-Id"] = request_id
    return resp


def problem_response(doc, request_id):
    doc.setdefault("instance", request_id)
    resp = json_response(doc, doc["status"], request_id, "application/problem+json")
    if doc["status"] == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="unionhub"'
    if doc.get("retry_after"):
        resp.headers["Retry-After"] = str(doc["retry_after"])
    return resp


class Router:
    def __init__(self, routes=None):
        self.routes = routes if routes is not None else ROUTES
        self.map = Map([Rule(r.path, methods=[r.method], endpoint=i) for i, r in enumerate(self.routes)],
                       strict_slashes=False)

    def dispatch(self, gw, request):
        started = time.perf_counter()
        rid = request.headers.get("X-Request-Id", "")
        if not REQUEST_ID_RE.match(rid):
            rid = uuid.uuid4().hex
        logs.set_request_id(rid)
        gw.set_request_id(rid)
        label = "unmatched"
        cache_key = fill = None
        try:
            adapter = self.map.bind_to_environ(request.environ)
            try:
                index, params = adapter.match()
            except MethodNotAllowed as exc:
                allow = ", ".join(sorted(set(exc.valid_methods or ()) | {"OPTIONS"}))
                if request.method == "OPTIONS":
                    resp = Response(status=204, headers={"Allow": allow, "X-Request-Id": rid})
                else:
                    resp = problem_response(problem(405, "METHOD_NOT_ALLOWED", "Method %s is not allowed here; "
                                                    "use %s." % (request.method[:16], allow)), rid)
                    resp.headers["Allow"] = allow
                metrics.observe(request.method, label, resp.status_code, time.perf_counter() - started)
                return resp
            except RouteNotFound:
                raise AppError("No such route: %s" % request.path, code="NOT_FOUND", status=404)
            r = self.routes[index]
            label = "%s %s" % (r.method, r.path)
            check_path_params(params)
            call = Call(request=request, path_params=params, request_id=rid)
            if r.roles is not None:
                call.principal = auth.authenticate(request.headers.get("Authorization"))
                REVOCATIONS.check(call.principal, gw.membership)
                if call.principal.role not in r.roles:
                    raise Forbidden("This route is for %s." % " or ".join(r.roles), code="FORBIDDEN")
            else:
                header = request.headers.get("Authorization")
                if header and not r.raw:  # optional auth on public routes (raw ones: /metrics has its own token)
                    call.principal = auth.authenticate(header)
                    REVOCATIONS.check(call.principal, gw.membership)
            if r.cache is not None and r.method == "GET":
                cache_key = (request.path, request.query_string)
                stamp = READ_CACHE.stamp(request.path)
                hit, fill = READ_CACHE.get(cache_key, stamp)
                if hit is not None:
                    resp = READ_CACHE.response(request, hit, rid)
                    metrics.observe(request.method, label, resp.status_code, time.perf_counter() - started)
                    return resp
            if r.query is not None:
                call.query = load_query(r.query, request)
            elif r.method == "GET" and request.args and not r.raw:
                unknown = {k: ["Unknown field."] for k in request.args}
                raise validation_error(unknown)
            if r.body is not None:
                call.body = load_body(r.body, request)
            elif r.method in ("POST", "PUT", "PATCH") and request.content_length:
                body = read_json(request)
                if body not in ({}, None):
                    raise validation_error({"_schema": ["This route takes no body."]})
            if r.idempotent:
                key = request.headers.get("Idempotency-Key")
                if key is not None and not IDEMPOTENCY_KEY_RE.match(key):
                    raise validation_error({"Idempotency-Key": ["1-128 characters: letters, digits, _-.:"]})
                call.idempotency_key = key
            result = r.handler(gw, call)
            if isinstance(result, Response):
                result.headers["X-Request-Id"] = rid
                resp = result
            elif cache_key is not None:
                seconds = r.cache(result) if callable(r.cache) else r.cache
                seconds, max_age = seconds if isinstance(seconds, tuple) else (seconds, None)
                data = json.dumps(result, ensure_ascii=False, default=str).encode("utf-8")
                hit = READ_CACHE.put(cache_key, data, seconds, stamp, max_age)
                if fill is not None:
                    READ_CACHE.done(cache_key, fill, hit)
                    fill = None
                resp = READ_CACHE.response(request, hit, rid)
            else:
                resp = json_response(result, 204 if result is None and r.status == 204 else r.status, rid)
            if r.method in ("POST", "PUT", "PATCH", "DELETE") and resp.status_code < 400:
                READ_CACHE.written(request.path)
        except AppError as exc:
            resp = problem_response(exc.to_problem(), rid)
        except Exception:
            log.exception("unhandled error on %s", label)
            resp = problem_response(problem(500, "INTERNAL", "Something went wrong; it has been logged."), rid)
        finally:
            if fill is not None:  # the read failed (or answered a Response): whoever waited reads alone
                READ_CACHE.done(cache_key, fill)
        metrics.observe(request.method, label, resp.status_code, time.perf_counter() - started)
        return resp


def read_json(request):
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise AppError("The body is larger than %d bytes." % MAX_BODY_BYTES, code="PAYLOAD_TOO_LARGE", status=413)
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise AppError("The body is larger than %d bytes." % MAX_BODY_BYTES, code="PAYLOAD_TOO_LARGE", status=413)
    if not raw.strip():
        return None
    ctype = (request.mimetype or "").lower()
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise AppError("Send JSON (Content-Type: application/json).", code="UNSUPPORTED_MEDIA_TYPE", status=415)
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AppError("The body is not valid JSON: %s" % exc, code="MALFORMED_JSON", status=400)
    except RecursionError:
        raise AppError("The body nests deeper than %d levels." % MAX_JSON_DEPTH, code="MALFORMED_JSON", status=400)
    check_json_shape(body)
    return body


def _no_constant(name):
    raise ValueError("%s is not a JSON number" % name)


def check_json_shape(body):
    """Hostile JSON that parsed: nested deeper than ``MAX_JSON_DEPTH`` or holding a lone surrogate (a string that
    cannot be UTF-8, which the store and the broker would choke on) is a 400, not a 500 further in."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise AppError("The body nests deeper than %d levels." % MAX_JSON_DEPTH, code="MALFORMED_JSON",
                           status=400)
        if isinstance(value, dict):
            stack.extend((k, depth) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise AppError("The body holds a string that is not valid Unicode (a lone surrogate).",
                               code="MALFORMED_JSON", status=400)


def check_path_params(params):
    """An id in a path is printable and short; anything else (a newline, a control character) names nothing."""
    for value in params.values():
        if not isinstance(value, str) or len(value) > MAX_PATH_PARAM or not value.isprintable():
            raise AppError("No such resource.", code="NOT_FOUND", status=404)


def load_body(schema, request):
    body = read_json(request)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise validation_error({"_schema": ["The body must be a JSON object."]})
    try:
        return (schema() if isinstance(schema, type) else schema).load(body)
    except ValidationError as exc:
        raise validation_error(exc.messages)


def load_query(schema, request):
    s = schema() if isinstance(schema, type) else schema
    data = {}
    for key in request.args:
        values = request.args.getlist(key)
        f = s.fields.get(key)
        from marshmallow import fields as mf
        if f is not None and isinstance(f, mf.List):
            data[key] = [v for item in values for v in item.split(",") if v != ""]
        else:
            if len(values) > 1:
                raise validation_error({key: ["Give this parameter once."]})
            data[key] = values[0]
    try:
        return s.load(data)
    except ValidationError as exc:
        raise validation_error(exc.messages)

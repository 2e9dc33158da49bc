"""OpenAPI 3 document generated from the route table and the same marshmallow schemas that validate requests."""
import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

PROBLEM = {
    "type": "object",
    "properties": {"type": {"type": "string"}, "status": {"type": "integer"}, "title": {"type": "string"},
                   "detail": {"type": "string"}, "code": {"type": "string"}, "instance": {"type": "string"},
                   "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                   "retry_after": {"type": "integer", "description": "429: seconds to wait (also Retry-After)"}},
    "required": ["status", "title", "code"],
}


def _oapi_path(path):
    return re.sub(r"<(?:[a-z]+:)?([a-zA-Z_]+)>", r"{\1}", path)


def build(routes):
    spec = APISpec(title="UnionHub API", version="1.0.0", openapi_version="3.0.3", plugins=[MarshmallowPlugin()],
                   info={"description": "HTTP contract of the UnionHub gateway (API.md). Errors are "
                                        "application/problem+json with a stable `code`."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Problem", PROBLEM)
    paths = {}
    for r in routes:
        if r.raw and r.path in ("/docs",):
            continue
        op = {"summary": r.summary or r.name, "operationId": r.name, "tags": list(r.tags) or ["Operations"],
              "responses": {}}
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in re.findall(r"<(?:[a-z]+:)?([a-zA-Z_]+)>", r.path)]
        if r.query is not None:
            params.append({"in": "query", "schema": r.query})
        params.append({"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"}})
        if r.idempotent:
            params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "schema": {"type": "string", "maxLength": 128},
                           "description": "The same key from the same caller returns the first result again."})
        op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": r.body}}}
        ok = {"description": "OK" if r.status < 300 else "Accepted/Created"}
        if r.response is not None:
            ok["content"] = {"application/json": {"schema": r.response}}
        op["responses"][str(r.status)] = ok
        if r.cache is not None:  # ReadCache: a weak ETag on every answer, 304 to If-None-Match
            params.append({"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
                           "description": "The ETag of an answer held: 304 (no body) while it is still the answer."})
            ok["headers"] = {
                "ETag": {"schema": {"type": "string"}, "description": "Weak validator of this answer."},
                "Cache-Control": {"schema": {"type": "string"}, "description":
                                  "`public, max-age=1` where a second of staleness is harmless; `no-cache` on a live "
                                  "campaign with stock (revalidate every time)."}}
            op["responses"]["304"] = {"description": "Not Modified: the If-None-Match ETag is still the answer."}
        problem = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        op["responses"]["400"] = dict(problem, description="VALIDATION_ERROR, MALFORMED_JSON")
        if r.roles:
            op["security"] = [{"bearer": []}]
            op["x-roles"] = list(r.roles)
            op["responses"]["401"] = dict(problem, description="UNAUTHORIZED, INVALID_TOKEN, TOKEN_EXPIRED")
            op["responses"]["403"] = dict(problem, description="FORBIDDEN, OUT_OF_SCOPE")
        for code in r.errors:
            status, name = code.split(" ", 1)
            prev = op["responses"].get(status)
            desc = (prev["description"] + ", " + name) if prev and status != str(r.status) else name
            op["responses"][status] = dict(problem, description=desc)
        op["responses"].setdefault("503", dict(problem, description="SERVICE_UNAVAILABLE"))
        op["responses"].setdefault("504", dict(problem, description="SERVICE_TIMEOUT"))
        paths.setdefault(_oapi_path(r.path), {})[r.method.lower()] = op
    for path, ops in sorted(paths.items()):
        spec.path(path=path, operations=ops)
    return spec.to_dict()

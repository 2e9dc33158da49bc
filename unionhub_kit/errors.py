"""Error types that map to problem documents (RFC 7807) and survive an RPC hop.

Services raise these; nameko serialises the exception with its args and, because every class here is registered
with ``deserialize_to_instance``, the gateway gets the same exception back and renders ``to_problem()``.
"""
from nameko.exceptions import deserialize_to_instance

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
          410: "Gone", 413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
          429: "Too Many Requests", 503: "Service Unavailable", 504: "Gateway Timeout"}


@deserialize_to_instance
class AppError(Exception):
    """Base error: ``code`` is the stable UPPER_SNAKE machine code, ``status`` the HTTP status."""
    status = 400
    code = "BAD_REQUEST"

    def __init__(self, detail="", code=None, status=None, errors=None, retry_after=None):
        self.detail = detail
        if code:
            self.code = code
        if status:
            self.status = int(status)
        # nameko serialises every argument that is not a string, list or dict with str(): None arrives as "None"
        # and an int as "30", so errors is always a dict (empty when there are none) and retry_after a number
        self.errors = errors if isinstance(errors, dict) else {}
        self.retry_after = int(retry_after) if str(retry_after or "").isdigit() else None
        # args are what nameko serialises; keep them JSON-safe and in constructor order
        super().__init__(detail, self.code, self.status, self.errors, self.retry_after or 0)

    def to_problem(self):
        doc = {"type": "about:blank", "status": self.status, "title": TITLES.get(self.status, "Error"),
               "detail": self.detail, "code": self.code}
        if self.errors:
            doc["errors"] = self.errors
        if self.retry_after:
            doc["retry_after"] = self.retry_after  # the gateway also sends it as the Retry-After header
        return doc

    def __str__(self):
        return "%s %s: %s" % (self.status, self.code, self.detail)


def _make(name, status, code):
    cls = type(name, (AppError,), {"status": status, "code": code})
    cls.__module__ = __name__
    return deserialize_to_instance(cls)


ValidationFailed = _make("ValidationFailed", 400, "VALIDATION_ERROR")
Unauthorized = _make("Unauthorized", 401, "UNAUTHORIZED")
Forbidden = _make("Forbidden", 403, "FORBIDDEN")
NotFound = _make("NotFound", 404, "NOT_FOUND")
Conflict = _make("Conflict", 409, "CONFLICT")
Gone = _make("Gone", 410, "GONE")
RateLimited = _make("RateLimited", 429, "RATE_LIMITED")
ServiceUnavailable = _make("ServiceUnavailable", 503, "SERVICE_UNAVAILABLE")
ServiceTimeout = _make("ServiceTimeout", 504, "SERVICE_TIMEOUT")


def validation_error(errors, detail="The request is not valid."):
    """``errors`` is marshmallow's field -> messages mapping."""
    return ValidationFailed(detail, errors=_flatten(errors))


def _flatten(errors, prefix=""):
    out = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = "%s.%s" % (prefix, key) if prefix else str(key)
            if isinstance(value, dict):
                out.update(_flatten(value, name))
            else:
                out[name] = [str(v) for v in (value if isinstance(value, list) else [value])]
    else:
        out[prefix or "_schema"] = [str(e) for e in (errors if isinstance(errors, list) else [errors])]
    return out

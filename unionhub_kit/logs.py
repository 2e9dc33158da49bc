"""Structured JSON logs with the request id, and redaction of personal data, login codes and tokens.

Every record passes ``Redactor``: an 18-character resident ID number, an 11-digit mobile number, a bearer or JWT
token and ``code=...`` / ``"code": ...`` values are masked before anything is written.
"""
import json
import logging
import re
import threading

_local = threading.local()  # green under eventlet's monkey patching: one per greenthread

ID_RE = re.compile(r"(?<![0-9A-Za-z])(\d{6})(\d{8})(\d{3}[\dXx])(?![0-9A-Za-z])")
PHONE_RE = re.compile(r"(?<!\d)(1[3-9]\d)(\d{4})(\d{4})(?!\d)")
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.=]+")
CODE_RE = re.compile(r"""(?i)(["']?(?:code|otp|password|secret|token)["']?\s*[:=]\s*["']?)([^"',\s}]+)""")
COUPON_PATH_RE = re.compile(r"(/coupons/)[^/\s\"'?]+")  # a coupon code is a bearer secret, also in request paths


def redact(text):
    text = JWT_RE.sub("[token]", text)
    text = BEARER_RE.sub(r"\1[token]", text)
    text = CODE_RE.sub(r"\1[redacted]", text)
    text = COUPON_PATH_RE.sub(r"\1[code]", text)
    text = ID_RE.sub(lambda m: m.group(1)[:4] + "*" * 10 + m.group(3)[-4:], text)
    text = PHONE_RE.sub(r"\1****\3", text)
    return text


def set_request_id(request_id):
    _local.request_id = request_id


def get_request_id():
    return getattr(_local, "request_id", None)


class Redactor(logging.Filter):
    def filter(self, record):
        try:
            msg = record.getMessage()
        except Exception:
            msg = str(record.msg)
        record.msg = redact(msg)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.request_id = get_request_id()
        return True


class DropExpectedErrors(logging.Filter):
    """On nameko's ``nameko.containers`` logger: drops its "(expected) error handling worker" warning, which nameko
    logs with the whole traceback for every ``AppError`` an entrypoint raises (every 404, 403, 409 ``SOLD_OUT``...).
    Formatting and redacting that traceback was ~30% of a benefits process's CPU in a flash grab, where three of four
    claims are answered 409 (py-spy, ``bench.flash_grab``). The access line of every worker (``ServiceMetrics``:
    ``rpc benefits.claim client_error 3.1ms``) still records each one; unexpected errors are still logged whole."""

    def filter(self, record):
        return not (isinstance(record.msg, str) and record.msg.startswith("(expected) error handling worker"))


def drop_expected_errors():
    """Install ``DropExpectedErrors`` on nameko's container logger (once per process)."""
    logger = logging.getLogger("nameko.containers")
    if not any(isinstance(f, DropExpectedErrors) for f in logger.filters):
        logger.addFilter(DropExpectedErrors())


class JsonFormatter(logging.Formatter):
    def format(self, record):
        doc = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + ".%03dZ" % record.msecs,
               "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        rid = getattr(record, "request_id", None) or get_request_id()
        if rid:
            doc["request_id"] = rid
        if record.exc_info or record.exc_text:
            doc["exc"] = redact(record.exc_text or self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


def guarded(fn, what, logger="unionhub"):
    """``fn`` for a background green thread (``GreenPool.spawn_n``, ``eventlet.spawn``): an exception is logged
    through ``logging`` (JSON, redacted) instead of eventlet printing a raw traceback to stderr."""
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:
            logging.getLogger(logger).exception("%s failed in a background thread", what)
    return run


def configure(level="INFO", json_format=True):
    handler = logging.StreamHandler()
    handler.addFilter(Redactor())
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

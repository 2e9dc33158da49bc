"""Settings from the environment, with working local defaults.

Read at call time (not import time) so tests and the runner can set the environment per process.
"""
import os

DEFAULTS = {
    "AMQP_URI": "amqp://guest:guest@localhost:5672/",
    "MONGO_URI": "mongodb://127.0.0.1:27217/?directConnection=true",
    "UNIONHUB_DB_PREFIX": "unionhub",
    "UNIONHUB_SECRET": "dev-only-secret-change-me-in-production-0123456789",
    "RPC_TIMEOUT": "5",
    "GATEWAY_PORT": "8000",
    "EVENT_MAX_ATTEMPTS": "5",
    "EVENT_RETRY_BASE_MS": "200",
}


def get(name, default=None):
    value = os.environ.get(name)
    if value is None or value == "":
        return DEFAULTS.get(name, default) if default is None else default
    return value


def get_int(name, default=None):
    return int(get(name, default))


def get_float(name, default=None):
    return float(get(name, default))


def secret(purpose):
    """A per-purpose key derived from UNIONHUB_SECRET (or set directly as UNIONHUB_<PURPOSE>_KEY)."""
    import hashlib
    direct = os.environ.get("UNIONHUB_%s_KEY" % purpose.upper())
    if direct:
        return direct.encode()
    base = get("UNIONHUB_SECRET").encode()
    return hashlib.sha256(base + b"|" + purpose.encode()).digest()


def db_name(service, config=None):
    prefix = (config or {}).get("DB_PREFIX") or get("UNIONHUB_DB_PREFIX")
    return "%s_%s" % (prefix, service)


def nameko_config(**overrides):
    """A nameko config dict from the environment (used by tests and scripts)."""
    cfg = {
        "AMQP_URI": get("AMQP_URI"),
        "MONGO_URI": get("MONGO_URI"),
        "DB_PREFIX": get("UNIONHUB_DB_PREFIX"),
        "RPC_TIMEOUT": get_float("RPC_TIMEOUT"),
        "max_workers": get_int("MAX_WORKERS", 32),
        "serializer": "json",
    }
    cfg.update(overrides)
    return cfg

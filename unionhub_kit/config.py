"""Every setting UnionHub reads, in one table with its type and default, read through one function: ``get``.

``get(name, cfg)`` answers from the nameko container config ``cfg`` when it holds the setting (tests pass config
dicts), else from the environment, else the table's default; the value has the table's type. Read at call time (not
import time) so tests and the runner can set the environment per process. ``Container`` (named by
``SERVICE_CONTAINER_CLS`` in ``deploy/nameko.yaml`` and by ``nameko_config``) validates every setting when a service
starts and fills the keys nameko itself reads, so a mistyped value stops the process at start-up, not mid-request.
A name missing from the table is a programming error (``KeyError``): add it here, with its default.
"""
import os

from nameko.containers import ServiceContainer
from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider
from nameko.timer import Timer


def _bool(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean: %r" % value)


class Setting:
    def __init__(self, kind, default, env=None, key=None):
        self.kind, self.default, self.env, self.key = kind, default, env, key


# name: Setting(type, default[, env: the environment variable when it differs from the name,
#                                 key: the nameko config key when it differs from the name])
SETTINGS = {
    # ---- infrastructure (every process) ------------------------------------------------------------------------
    "AMQP_URI": Setting(str, "amqp://guest:guest@localhost:5672/"),
    "RABBIT_API_URI": Setting(str, "http://guest:guest@localhost:15672"),
    "MONGO_URI": Setting(str, "mongodb://127.0.0.1:27217/?directConnection=true"),
    "MONGO_POOL": Setting(int, 100),
    "STORE_TIMEOUT_MS": Setting(int, 4000),  # a request's transaction, retries included
    "STORE_SELECT_TIMEOUT_MS": Setting(int, 3000),
    "STORE_SOCKET_TIMEOUT_MS": Setting(int, 15000),  # any other round trip: a backstop against a hung store
    "STORE_INDEX_TIMEOUT_MS": Setting(int, 1800000),  # index builds at start
    "STORE_BACKGROUND_TIMEOUT_MS": Setting(int, 30000),  # an event handler's transaction (nobody waits on it)
    "UNIONHUB_UNDURABLE_FOR_BENCH": Setting(_bool, False),  # bench/durability.py only, development only
    "UNIONHUB_WRITE_AUDIT": Setting(str, None),  # path prefix: every write command of the process noted (chaos)
    "DB_PREFIX": Setting(str, "unionhub", env="UNIONHUB_DB_PREFIX"),
    "UNIONHUB_ENV": Setting(str, "production"),  # development or production (see unionhub_kit.keys)
    "UNIONHUB_SECRET": Setting(str, None),  # the root secret (unionhub_kit.keys; development has a published one)
    "UNIONHUB_SECRET_PREVIOUS": Setting(str, ""),  # comma-separated earlier roots, while rotating
    "UNIONHUB_LOOKUP_SECRET": Setting(str, None),  # the root of the lookup hashes, pinned across rotations
    "UNIONHUB_REPLICA": Setting(str, None),
    "UNIONHUB_FAULT": Setting(str, None),
    "UNIONHUB_ACCESS_LOG": Setting(_bool, True),
    "UNIONHUB_ADMIN_PASSWORD": Setting(str, None),
    "RPC_TIMEOUT": Setting(float, 5.0),
    # calls made with an affinity key (a campaign's claims) go to one replica, served by @affinity_rpc
    # (unionhub_kit.affinity: RabbitMQ's consistent-hash exchange); off: the shared queue, for callers and replicas
    "RPC_AFFINITY": Setting(_bool, True),
    # how many affinity keys one campaign's claims are spread over (by member: gateway.routes.benefits.claim_key),
    # so a grab too big for one benefits process is decided by up to this many; 1: one replica decides a campaign
    "CLAIM_AFFINITY_SHARDS": Setting(int, 1),
    "EVENT_MAX_ATTEMPTS": Setting(int, 5),
    "EVENT_RETRY_BASE_MS": Setting(int, 200),
    "EVENT_TRANSIENT_MAX_ATTEMPTS": Setting(int, 12),  # a handler failing with 503/504 or an unreachable store
    "MAX_WORKERS": Setting(int, 32, key="max_workers"),
    "GATEWAY_HOST": Setting(str, "127.0.0.1"),
    "GATEWAY_PORT": Setting(int, 8000),
    "TRUSTED_PROXIES": Setting(str, ""),  # comma-separated addresses or CIDRs whose X-Forwarded-For is believed
    "METRICS_PORT": Setting(int, 0),
    "METRICS_HOST": Setting(str, "127.0.0.1"),
    "METRICS_TOKEN": Setting(str, None),  # the gateway's /metrics for a scraper holding it
    # ---- membership, benefits, jobs ------------------------------------------------------------------------------
    "OTP_PURGE_SECONDS": Setting(float, 600.0),
    "COUNT_FOLD_SECONDS": Setting(float, 0.5),
    "OTP_PER_ADDRESS_PER_HOUR": Setting(int, 20),
    "LOGIN_LOCKOUT_SECONDS": Setting(int, 300),
    "BENEFITS_SWEEP_SECONDS": Setting(float, 10.0),
    # published outbox rows: deleted at once (False), or marked and kept a day (True: an audit trail of what each
    # service emitted; the service tests read events there). Deleting costs the store about half as much.
    "OUTBOX_KEEP_PUBLISHED": Setting(_bool, False),
    # under load (the last round found several rows) the relay's rounds (a read, one confirm, one delete) start at
    # most this often, one round publishing every commit since the last; a lone event is published at once (outbox.py)
    "OUTBOX_ROUND_MS": Setting(float, 50.0),
    "WEBHOOK_ROUTES_SECONDS": Setting(float, 10.0),  # how often notify re-derives its webhook queue's bindings
    "JOBS_EXPIRY_INTERVAL": Setting(float, 30.0),
    # ---- notify (see services/notify/runtime.py Settings) ------------------------------------------------------
    "NOTIFY_POLL_SECONDS": Setting(float, None),
    "NOTIFY_CLOCK_OFFSET_SECONDS": Setting(float, None),
    "SMS_WEBHOOK_URL": Setting(str, None),
    "SMS_WEBHOOK_SECRET": Setting(str, None),
    "SMS_SINK_FILE": Setting(str, os.path.join("var", "sms.jsonl")),
    "PUSH_WEBHOOK_URL": Setting(str, None),
    "PUSH_WEBHOOK_SECRET": Setting(str, None),
    "PUSH_SINK_FILE": Setting(str, os.path.join("var", "push.jsonl")),
    "NOTIFY_PROVIDER_TIMEOUT": Setting(float, 5.0),
    "NOTIFY_MAX_ATTEMPTS": Setting(int, 5),
    "NOTIFY_RETRY_BASE_SECONDS": Setting(float, 2.0),
    "NOTIFY_RETRY_CAP_SECONDS": Setting(float, 300.0),
    "NOTIFY_OTP_ATTEMPTS": Setting(int, 3),
    "NOTIFY_OTP_BUDGET_SECONDS": Setting(float, 3.5),
    "NOTIFY_LEASE_SECONDS": Setting(float, 30.0),
    "NOTIFY_FANOUT_BATCH": Setting(int, 1000),
    "NOTIFY_TICK_BUDGET_SECONDS": Setting(float, 5.0),
    # the share of a notify process's time an announcement's fan-out may take (services/notify/fanout.py: the rest
    # is left to inbox reads, login codes and sends in the same process and the store they share)
    "NOTIFY_FANOUT_DUTY": Setting(float, 0.5),
    "NOTIFY_SEND_CONCURRENCY": Setting(int, 20),
    "PUSH_MULTICAST_MAX": Setting(int, 1000),  # device tokens per provider call
    "PUSH_MULTICAST_PER_SECOND": Setting(float, 20.0),  # provider calls a second, per process
    "WEBHOOK_ALLOW_PRIVATE": Setting(_bool, False),
    "WEBHOOK_MAX_ATTEMPTS": Setting(int, 8),
    "WEBHOOK_RETRY_BASE_SECONDS": Setting(float, 2.0),
    "WEBHOOK_RETRY_CAP_SECONDS": Setting(float, 600.0),
    "WEBHOOK_TIMEOUT_SECONDS": Setting(float, 5.0),
}
ENV_NAMES = {s.env or name for name, s in SETTINGS.items()}  # what an operator can set


def _raw(name, cfg):
    s = SETTINGS[name]
    if cfg:
        value = cfg.get(s.key or name)
        if value not in (None, ""):
            return value
    value = os.environ.get(s.env or name)
    return value if value not in (None, "") else None


def get(name, cfg=None):
    """The value of setting ``name`` (typed): from the container config ``cfg``, the environment, or the default."""
    if name not in SETTINGS:
        raise KeyError("%s is not a setting: add it to unionhub_kit.config.SETTINGS with its type and default" % name)
    if cfg is not None and not hasattr(cfg, "get"):
        raise TypeError("config.get(%r, cfg): cfg is a nameko config; the default of a setting lives in SETTINGS"
                        % name)
    value = _raw(name, cfg)
    if value is None:
        return SETTINGS[name].default
    return SETTINGS[name].kind(value)


def validate(cfg=None):
    """Every setting given (config or environment) parses as its type; else ``ConfigurationError`` naming them."""
    bad = []
    for name, s in SETTINGS.items():
        value = _raw(name, cfg)
        if value is not None:
            try:
                s.kind(value)
            except (TypeError, ValueError):
                bad.append("%s=%r (want %s)" % (s.env or name, value, s.kind.__name__.strip("_")))
    if bad:
        raise ConfigurationError("invalid settings: %s" % ", ".join(bad))


def db_name(service, cfg=None):
    return "%s_%s" % (get("DB_PREFIX", cfg), service)


def complete(cfg):
    """``cfg`` validated, with the keys nameko itself reads filled from the table (in place; returned)."""
    validate(cfg)
    for name in ("AMQP_URI", "MONGO_URI", "DB_PREFIX", "RPC_TIMEOUT", "MAX_WORKERS"):
        cfg[SETTINGS[name].key or name] = get(name, cfg)
    cfg.setdefault("serializer", "json")
    cfg.setdefault("SERVICE_CONTAINER_CLS", "unionhub_kit.config.Container")
    cfg.setdefault("WEB_SERVER_ADDRESS", "%s:%s" % (get("GATEWAY_HOST", cfg), get("GATEWAY_PORT", cfg)))
    return cfg


class Container(ServiceContainer):
    """nameko's container, with the settings validated and completed before any extension reads them, and the
    environment checked (``unionhub_kit.keys``: a production start needs a secret of its own)."""

    def __init__(self, service_cls, config):
        from . import keys, logs
        super().__init__(service_cls, complete(config))
        keys.check_environment("the %s service" % self.service_name)
        logs.drop_expected_errors()


def nameko_config(**overrides):
    """A nameko config dict from the environment (used by tests and scripts)."""
    cfg = {"parent_calls_tracked": 10}
    cfg.update(overrides)
    return complete(cfg)


class Settings(DependencyProvider):
    """``self.setting("NAME")``: ``get`` with this container's config (for entrypoints that read a setting)."""

    def get_dependency(self, worker_ctx):
        cfg = self.container.config
        return lambda name: get(name, cfg)


class SettingTimer(Timer):
    """nameko's ``@timer`` whose interval (seconds) is a setting, read when the container starts."""

    def __init__(self, setting, **kwargs):
        self.setting = setting
        super().__init__(interval=None, **kwargs)

    def setup(self):
        self.interval = get(self.setting, self.container.config)
        super().setup()


timer = SettingTimer.decorator

"""Notify's runtime pieces: its settings (read once at container setup, templates checked there), and ``@poll``,
a timer entrypoint that a worker can wake early.

``@poll(interval)`` runs its method every ``interval`` seconds, at once again while the method returns True (more
work is waiting), and as soon as a worker that called ``self.wake("method")`` has finished (its writes are
committed by then). Like nameko's ``@timer`` it never runs two ticks of one method at once in a container; the
methods lease their work items, so replicas share the work.
"""
import os
import time
import uuid
from datetime import timedelta

import eventlet
from eventlet.event import Event
from eventlet.queue import Empty, LightQueue
from nameko.extensions import DependencyProvider, Entrypoint

from unionhub_kit import clock
from unionhub_kit import config as kit_config

from . import providers, templates


class Poller(Entrypoint):
    """``interval`` seconds between idle runs (``NOTIFY_POLL_SECONDS`` in the config or environment overrides it)."""

    def __init__(self, interval, **kwargs):
        self.interval = interval
        self._wake = LightQueue(maxsize=1)
        self._stopping = False
        self.gt = None
        super().__init__(**kwargs)

    def setup(self):
        given = kit_config.get("NOTIFY_POLL_SECONDS", self.container.config)
        if given:
            self.interval = given

    def start(self):
        self._stopping = False
        self.gt = self.container.spawn_managed_thread(self._run, identifier="poll-%s" % self.method_name)

    def stop(self):
        self._stopping = True
        self.wake()
        if self.gt is not None:
            self.gt.wait()

    def kill(self):
        self._stopping = True
        if self.gt is not None:
            self.gt.kill()

    def wake(self):
        try:
            self._wake.put_nowait(1)
        except Exception:  # already woken
            pass

    def _run(self):
        while not self._stopping:
            more = self._tick()
            if self._stopping:
                break
            if more:
                continue
            try:
                self._wake.get(timeout=self.interval)
            except Empty:
                pass

    def _tick(self):
        done = Event()

        def handle_result(worker_ctx, result, exc_info):
            done.send(bool(result) and exc_info is None)
            return result, exc_info
        self.container.spawn_worker(self, (), {}, handle_result=handle_result)
        return done.wait()


poll = Poller.decorator


class Wake(DependencyProvider):
    """``self.wake("deliver_due", ...)``: wake those ``@poll`` methods when this worker has finished."""

    def get_dependency(self, worker_ctx):
        def wake(*names):
            worker_ctx.data.setdefault("_notify_wake", set()).update(names)
        return wake

    def worker_teardown(self, worker_ctx):
        names = worker_ctx.data.pop("_notify_wake", None)
        if names:
            for ep in self.container.entrypoints:
                if isinstance(ep, Poller) and ep.method_name in names:
                    ep.wake()


class Pacer:
    """At most ``rate`` calls a second from this process (green threads wait their turn)."""

    def __init__(self, rate):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_at = 0.0

    def wait(self):
        now = time.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        if at > now:
            eventlet.sleep(at - now)


class Settings:
    """What notify reads from its configuration (``unionhub_kit.config``: nameko config, environment, default).

    Providers: ``SMS_WEBHOOK_URL`` / ``SMS_WEBHOOK_SECRET`` / ``SMS_SINK_FILE`` (default ``var/sms.jsonl``), the same
    with ``PUSH_``, ``NOTIFY_PROVIDER_TIMEOUT`` (s). Retries of SMS / push: ``NOTIFY_MAX_ATTEMPTS``,
    ``NOTIFY_RETRY_BASE_SECONDS``, ``NOTIFY_RETRY_CAP_SECONDS``; of the login code (synchronous):
    ``NOTIFY_OTP_ATTEMPTS`` within ``NOTIFY_OTP_BUDGET_SECONDS``. Fan-out: ``NOTIFY_FANOUT_BATCH``,
    ``NOTIFY_LEASE_SECONDS``, ``NOTIFY_TICK_BUDGET_SECONDS``, ``NOTIFY_FANOUT_DUTY`` (the share of the time it may
    take); push multicast: ``PUSH_MULTICAST_MAX`` device tokens a provider call (1000), ``PUSH_MULTICAST_PER_SECOND``
    calls a second (20). Webhooks: ``WEBHOOK_ALLOW_PRIVATE``,
    ``WEBHOOK_MAX_ATTEMPTS``, ``WEBHOOK_RETRY_BASE_SECONDS``, ``WEBHOOK_RETRY_CAP_SECONDS``,
    ``WEBHOOK_TIMEOUT_SECONDS``. Clock: ``NOTIFY_CLOCK_OFFSET_SECONDS`` (tests and demos of quiet hours).
    """

    def __init__(self, get):
        self.sms = providers.build("sms", get)
        self.push = providers.build("push", get)
        self.max_attempts = get("NOTIFY_MAX_ATTEMPTS")
        self.retry_base = get("NOTIFY_RETRY_BASE_SECONDS")
        self.retry_cap = get("NOTIFY_RETRY_CAP_SECONDS")
        self.otp_attempts = get("NOTIFY_OTP_ATTEMPTS")
        self.otp_budget = get("NOTIFY_OTP_BUDGET_SECONDS")
        self.provider_timeout = get("NOTIFY_PROVIDER_TIMEOUT")
        self.lease_seconds = get("NOTIFY_LEASE_SECONDS")
        self.batch = get("NOTIFY_FANOUT_BATCH")
        self.tick_budget = get("NOTIFY_TICK_BUDGET_SECONDS")
        self.fanout_duty = min(1.0, max(0.05, get("NOTIFY_FANOUT_DUTY")))
        self.concurrency = get("NOTIFY_SEND_CONCURRENCY")
        self.amqp_uri = get("AMQP_URI")  # the webhook queue's bindings (``routing``)
        self.push_multicast_max = get("PUSH_MULTICAST_MAX")  # device tokens per provider call
        self.push_pacer = Pacer(get("PUSH_MULTICAST_PER_SECOND"))  # provider calls a second, per process
        self.webhook_allow_private = get("WEBHOOK_ALLOW_PRIVATE")
        self.webhook_max_attempts = get("WEBHOOK_MAX_ATTEMPTS")
        self.webhook_retry_base = get("WEBHOOK_RETRY_BASE_SECONDS")
        self.webhook_retry_cap = get("WEBHOOK_RETRY_CAP_SECONDS")
        self.webhook_timeout = get("WEBHOOK_TIMEOUT_SECONDS")
        self.owner = "notify-%s-%s" % (os.getpid(), uuid.uuid4().hex[:8])
        offset = get("NOTIFY_CLOCK_OFFSET_SECONDS")
        if offset:
            clock.CLOCK.offset = timedelta(seconds=offset)


class SettingsProvider(DependencyProvider):
    """Injects ``Settings``; setup fails (the service does not start) when a template is missing."""

    def setup(self):
        templates.check()
        cfg = self.container.config
        self.settings = Settings(lambda name: kit_config.get(name, cfg))

    def get_dependency(self, worker_ctx):
        return self.settings

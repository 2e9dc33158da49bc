"""What keeps the gateway's cached campaign answers honest when stock goes down elsewhere: each gateway process
subscribes to benefits' stock events and drops the cached reads of that campaign (and the campaign lists) when one
arrives.

A campaign's stock goes down through claims answered by *this* gateway (``ReadCache.written`` drops the campaign
reads before the 201 leaves), but also through claims answered by other gateway replicas and through welcome
coupons issued in benefits' ``member_joined`` handler (no HTTP request at all). Those are announced by benefits'
``coupon_claimed`` and ``campaign_sold_out`` events (``campaign_published`` too: a new campaign is in the lists at
once).

Each process has its own queue (a broadcast: every process must hear every event), ``unionhub.gateway-cache.*``:
exclusive and auto-deleted (it lives as long as this process's connection), not durable, messages not acknowledged
(``no_ack``), at most ``QUEUE_MAX`` waiting (the oldest dropped first, never refusing benefits' publishes). A lost
event only makes an answer stale up to the route's seconds (``LIVE_CACHE_SECONDS``): the hard bound.

The cost per event in the gateway is one JSON decode and a few dict operations (``ReadCache.changed``): no store,
no RPC, no nameko worker. An event is checked only for the one field used (``data.campaign_id``, a short string):
a forged one can only make the gateway drop cached answers.

While this process is not subscribed (starting, the broker connection lost) ``live()`` is False and a live
campaign's answer is not kept at all (``routes.benefits.honest_seconds``); on (re)subscribing every cached campaign
read is dropped (the events of the gap were missed).
"""
import logging
import os
import socket
import time
import uuid

import eventlet
from kombu import Connection, Queue, binding
from nameko.extensions import DependencyProvider
from prometheus_client import Counter, Gauge

from unionhub_kit import config, topology
from unionhub_kit.metrics import REGISTRY

from .framework import READ_CACHE

log = logging.getLogger("unionhub.gateway")

# (service, event) -> the gateway resource whose cached reads it changes (by the event's ``data.campaign_id``)
EVENTS = {
    ("benefits", "coupon_claimed"): "campaigns",
    ("benefits", "campaign_sold_out"): "campaigns",
    ("benefits", "campaign_published"): "campaigns",
}
QUEUE_PREFIX = "unionhub.gateway-cache."
QUEUE_MAX = 10000
HEARTBEAT = 10  # seconds (AMQP heartbeat: a dead connection is noticed within two of them)
RETRY_MAX = 5.0  # seconds between two attempts to subscribe again, at most
MAX_ID = 128


RECEIVED = Counter("unionhub_gateway_cache_events_total", "Events that dropped cached reads in this gateway process",
                   ["event"], registry=REGISTRY)
SUBSCRIBED = Gauge("unionhub_gateway_cache_subscribed", "1 while this gateway process hears the stock events",
                   registry=REGISTRY)
_COUNTERS = {event: RECEIVED.labels(event) for _, event in EVENTS}


class _State:
    subscribed = False


STATE = _State()


def live():
    """Whether this process hears benefits' stock events now (a live campaign's answer may be kept only then)."""
    return STATE.subscribed


def _subscribed(value):
    STATE.subscribed = value
    SUBSCRIBED.set(1 if value else 0)


def on_event(body, service, event):
    """One event (``body``: its envelope) of ``service`` named ``event``: drop the cached reads it changes."""
    resource = EVENTS.get((service, event))
    if resource is None:
        return False
    try:
        ident = body["data"]["campaign_id"]
    except (TypeError, KeyError):
        return False
    if not isinstance(ident, str) or not 0 < len(ident) <= MAX_ID:
        return False
    READ_CACHE.changed(resource, ident)
    _COUNTERS[event].inc()  # after the drop: whoever sees the count sees the cache without that answer
    return True


class CacheEvents(DependencyProvider):
    """The subscription of this gateway process (a managed thread of the container; no worker per event)."""

    def setup(self):
        self.amqp_uri = config.get("AMQP_URI", self.container.config)
        self.queue_name = "%s%s.%d.%s" % (QUEUE_PREFIX, socket.gethostname()[:64], os.getpid(), uuid.uuid4().hex[:8])
        self.running = False
        self.thread = None

    def start(self):
        self.running = True
        self.thread = self.container.spawn_managed_thread(self._run, identifier="cache_events")

    def stop(self):
        self.running = False
        _subscribed(False)
        if self.thread is not None:
            self.thread.kill()
            self.thread = None

    def kill(self):
        self.stop()

    def get_dependency(self, worker_ctx):
        return None

    def queue(self):
        bindings = [binding(topology.event_exchange(service), routing_key=event) for service, event in EVENTS]
        return Queue(self.queue_name, bindings=bindings, durable=False, exclusive=True, auto_delete=True,
                     queue_arguments={"x-max-length": QUEUE_MAX})

    def _on_message(self, body, message):
        info = message.delivery_info
        on_event(body, info.get("exchange", "").partition(".")[0], info.get("routing_key"))

    @staticmethod
    def _undecodable(message, exc):
        log.warning("gateway cache: an undecodable event, ignored: %s", str(exc)[:200])

    def _run(self):
        delay = 0.25
        while self.running:
            try:
                self._consume()
                delay = 0.25
            except Exception as exc:  # the broker away: not subscribed, try again (the cache stays honest without)
                if self.running:
                    log.warning("gateway cache: not subscribed to stock events (%s); again in %.1fs", exc, delay)
            finally:
                if STATE.subscribed:
                    _subscribed(False)
                    READ_CACHE.forget("campaigns")
            if self.running:
                eventlet.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    def _consume(self):
        with Connection(self.amqp_uri, heartbeat=HEARTBEAT, connect_timeout=5, transport_options={
                "client_properties": {"connection_name": self.queue_name}}) as conn:  # what ops see of it
            conn.ensure_connection(max_retries=1)
            with conn.Consumer(self.queue(), callbacks=[self._on_message], no_ack=True, accept=["json"],
                               on_decode_error=self._undecodable):
                READ_CACHE.forget("campaigns")  # what was cached before this subscription may have missed events
                _subscribed(True)
                log.info("gateway cache: subscribed to %s as %s", ", ".join(e for _, e in EVENTS), self.queue_name)
                checked = time.monotonic()
                while self.running:
                    try:
                        conn.drain_events(timeout=1.0)
                    except socket.timeout:
                        pass
                    now = time.monotonic()
                    if now - checked >= 1.0:
                        conn.heartbeat_check()
                        checked = now

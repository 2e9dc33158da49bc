"""Delivery providers: SMS and push, each a development sink or a signed HTTP webhook.

* sink: one log line (phone and login code masked) and one JSON line ``{to, template, params, text}`` (push:
  ``{to, platform, template, params, title, body}``) appended to ``SMS_SINK_FILE`` / ``PUSH_SINK_FILE``;
* webhook (``SMS_WEBHOOK_URL`` / ``PUSH_WEBHOOK_URL``): ``POST`` of the same JSON, signed like every outgoing
  webhook (``X-UnionHub-Timestamp``, ``X-UnionHub-Signature: sha256=<hex HMAC of "<timestamp>." + body>``,
  ``X-UnionHub-Delivery`` stable across retries) with ``SMS_WEBHOOK_SECRET`` / ``PUSH_WEBHOOK_SECRET``, and the
  dispatch id as ``Idempotency-Key``: a send retried after a crash or a lost answer carries the same key, so the
  provider can drop the repeat (the sink writes it as ``delivery_id``);
  anything but a 2xx answer, or no answer within ``NOTIFY_PROVIDER_TIMEOUT`` seconds, is a ``ProviderError``.

Retrying is the caller's business (see ``service``): providers make one attempt.
"""
import json
import logging
import os
import uuid

import requests

from unionhub_kit import crypto
from unionhub_kit.ids import mask_phone

log = logging.getLogger("unionhub.notify.providers")


class ProviderError(Exception):
    """One delivery attempt failed (the message may be retried)."""


def _masked(message):
    params = {k: ("*" * len(str(v)) if k == "code" else v) for k, v in (message.get("params") or {}).items()}
    to = message.get("to") or ""
    if isinstance(to, list):  # a push multicast
        return "%d devices" % len(to), params
    return (mask_phone(to) if message.get("platform") is None else to[:4] + "…"), params


class SinkProvider:
    """Development sink: a log line and a JSON line in a file."""
    kind = "sink"

    def __init__(self, channel, path):
        self.channel = channel
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)

    def send(self, message, timeout=None, delivery_id=None):
        to, params = _masked(message)
        log.info("%s sink: to %s template %s params %s", self.channel, to, message.get("template"),
                 json.dumps(params, ensure_ascii=False))
        line = (json.dumps(dict(message, delivery_id=delivery_id) if delivery_id else message, ensure_ascii=False)
                + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)  # one write with O_APPEND: lines of concurrent replicas do not interleave
            finally:
                os.close(fd)
        except OSError as exc:
            raise ProviderError("sink file %s: %s" % (self.path, exc))


class WebhookProvider:
    """A provider reached by a signed HTTP POST."""
    kind = "webhook"

    def __init__(self, channel, url, secret, timeout):
        self.channel = channel
        self.url = url
        self.secret = secret or ""
        self.timeout = timeout
        if not secret:
            log.warning("%s provider webhook has no secret: set %s_WEBHOOK_SECRET", channel, channel.upper())

    def send(self, message, timeout=None, delivery_id=None):
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        delivery_id = delivery_id or uuid.uuid4().hex
        headers = dict(crypto.signed_headers(body, self.secret, delivery_id),
                       **{"Content-Type": "application/json", "Idempotency-Key": str(delivery_id)})
        try:
            r = requests.post(self.url, data=body, headers=headers, timeout=timeout or self.timeout,
                              allow_redirects=False)
        except requests.RequestException as exc:
            raise ProviderError("%s provider unreachable: %s" % (self.channel, type(exc).__name__))
        if not 200 <= r.status_code < 300:
            raise ProviderError("%s provider answered HTTP %d" % (self.channel, r.status_code))


def build(channel, get):
    """The provider of ``channel`` ("sms" or "push") from the settings ``get(name)``."""
    prefix = channel.upper()
    url = get("%s_WEBHOOK_URL" % prefix)
    if url:
        return WebhookProvider(channel, url, get("%s_WEBHOOK_SECRET" % prefix), get("NOTIFY_PROVIDER_TIMEOUT"))
    return SinkProvider(channel, get("%s_SINK_FILE" % prefix))

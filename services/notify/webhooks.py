"""Integrator webhooks: one delivery per (webhook, event), POSTed as the event's CloudEvents JSON, signed (API.md
"Signed deliveries"): ``X-UnionHub-Timestamp: <unix seconds>``, ``X-UnionHub-Signature: sha256=<HMAC-SHA256 of
"<timestamp>." + body, key = the webhook's secret>`` and ``X-UnionHub-Delivery`` (the delivery id, the same on every
retry).

Handlers only record deliveries; ``send`` (run by a poller) makes one attempt. A 2xx answer delivers; anything
else, a timeout, or a target that now resolves to a private address is retried with exponential backoff and jitter
up to ``WEBHOOK_MAX_ATTEMPTS`` attempts (a bounded time: with the defaults about 8 minutes), then the delivery is
``failed``. Any delivery can be replayed.
"""
import json
import logging
from datetime import timedelta

import requests

from unionhub_kit import clock, crypto

from . import domain, store

log = logging.getLogger("unionhub.notify.webhooks")

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


def body_of(envelope):
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def post(url, envelope, secret, delivery_id, timeout):
    """One signed POST; returns ``(http_status or None, error or None)``."""
    body = body_of(envelope)
    headers = dict(crypto.signed_headers(body, secret, delivery_id), **{
        "Content-Type": CONTENT_TYPE, "X-UnionHub-Event-Type": envelope["type"], "User-Agent": "UnionHub-Webhooks/1"})
    try:
        r = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return None, "%s: %s" % (type(exc).__name__, str(exc)[:200])
    if 200 <= r.status_code < 300:
        return r.status_code, None
    return r.status_code, "HTTP %d" % r.status_code


def send(db, settings, doc):
    """One attempt at a leased delivery; returns its new status."""
    hook = store.webhook(db, doc["webhook_id"])
    attempts = doc["attempts"] + 1
    now = clock.CLOCK.now()
    if hook is None:
        store.settle(db.webhook_deliveries, doc, {"$set": {
            "status": "failed", "attempts": attempts, "last_error": "the webhook was deleted", "last_attempt_at": now}})
        return "failed"
    problem = domain.target_problem(hook["url"], settings.webhook_allow_private)
    if problem:
        status, error = None, "url " + problem
    else:
        status, error = post(hook["url"], doc["envelope"], store.webhook_secret(hook), doc["_id"],
                             settings.webhook_timeout)
    now = clock.CLOCK.now()
    update = {"attempts": attempts, "last_status": status, "last_error": error, "last_attempt_at": now}
    if error is None:
        update["status"] = "delivered"
    elif attempts >= settings.webhook_max_attempts:
        update["status"] = "failed"
        log.warning("webhook %s delivery %s failed after %d attempts: %s", hook["_id"], doc["_id"], attempts, error)
    else:
        delay = domain.backoff_seconds(attempts, settings.webhook_retry_base, settings.webhook_retry_cap)
        update["due_at"] = now + timedelta(seconds=delay)
    store.settle(db.webhook_deliveries, doc, {"$set": update})
    return update.get("status", "pending")

"""From "tell these members X" to inbox entries and provider messages, and the sending of those messages.

* ``plan`` builds the inbox entries (always) and the SMS / push messages the members' preferences allow, held until
  the end of their quiet hours; the caller writes them (in the event's transaction, or in a fan-out batch).
* ``send`` makes one attempt at a due message; the outcome is recorded with its ``notification_delivered`` /
  ``notification_failed`` event in one transaction, or the message is rescheduled with backoff and jitter.
* ``send_now`` is the synchronous path of the login code: bounded retries inside the caller's RPC time.
"""
import logging
import time
from datetime import timedelta

import eventlet

from unionhub_kit import clock, crypto
from unionhub_kit.errors import ServiceUnavailable
from unionhub_kit.ids import mask_phone
from unionhub_kit.mongo import transaction

from . import domain, store, templates
from .providers import ProviderError

log = logging.getLogger("unionhub.notify.delivery")

CONTACT = "notify-contact"  # encryption purpose of phones and device tokens at rest


def seal_contact(value):
    return crypto.encrypt(value, CONTACT)


def plan(db, session, template, user_ids, data, dedupe_prefix, now, phones=None, announcement_id=None):
    """``(inbox_docs, dispatch_docs)`` for ``user_ids``. ``phones`` (user id -> (encrypted, masked)) overrides the
    projection, for the event that brings the phone itself."""
    return plan_many(db, session, template, [(user_ids, data, dedupe_prefix)], now, phones, announcement_id)


def plan_many(db, session, template, jobs, now, phones=None, announcement_id=None):
    """``plan`` for several events of one template at once (``jobs``: ``[(user_ids, data, dedupe_prefix)]``): the
    members' devices, phones and preferences are read once for all of them."""
    channels = domain.FLOWS[template].channels
    everyone = list(dict.fromkeys(u for user_ids, _, _ in jobs for u in user_ids))
    devices = store.devices_of(db, everyone, session) if "push" in channels else []
    contacts = {}
    if "sms" in channels:
        contacts = dict(store.phones_of(db, [u for u in everyone if u not in (phones or {})], session))
        contacts.update(phones or {})
    reachable = {d["user_id"] for d in devices} | set(contacts)
    # preferences matter for the reachable members, and for everyone when the inbox text depends on the language
    wanted = everyone if not templates.language_neutral(template, "inbox") else list(reachable)
    prefs = store.preferences_of(db, wanted, session) if wanted else {}
    inbox, dispatches = [], []
    for user_ids, data, dedupe_prefix in jobs:
        allowed = {}
        for uid in user_ids:
            p = domain.prefs_view(prefs.get(uid))
            entry = domain.notification_doc(uid, template, templates.render(template, "inbox", data, p["language"]),
                                            "%s:%s" % (dedupe_prefix, uid), now, announcement_id=announcement_id)
            inbox.append(entry)
            if uid in reachable:
                allowed[uid] = (entry["_id"], p, domain.provider_channels(template, p))
        for uid in user_ids:
            if uid not in contacts:
                continue
            enc, masked = contacts[uid]
            notification_id, p, chans = allowed[uid]
            if "sms" in chans:
                dispatches.append(domain.dispatch_doc(
                    uid, notification_id, template, "sms", templates.render(template, "sms", data, p["language"]),
                    enc, masked, "%s:%s:sms" % (dedupe_prefix, uid), now,
                    domain.quiet_until(now, p["quiet_hours"]) or now))
        for device in devices:
            if device["user_id"] not in allowed:
                continue
            notification_id, p, chans = allowed[device["user_id"]]
            if "push" in chans:
                dispatches.append(domain.dispatch_doc(
                    device["user_id"], notification_id, template, "push",
                    templates.render(template, "push", data, p["language"]), seal_contact(device["token"]),
                    device["token"][:4] + "…", "%s:push:%s" % (dedupe_prefix, device["_id"]), now,
                    domain.quiet_until(now, p["quiet_hours"]) or now, platform=device["platform"]))
    return inbox, dispatches


def plan_multicast(db, template, user_ids, data, notification_id, dedupe_prefix, now, max_tokens):
    """Push messages to the devices of ``user_ids`` as multicast dispatches: one per (time it may go out, language,
    platform) and up to ``max_tokens`` device tokens each, i.e. one provider call instead of one per device. The
    members' preferences apply as for one message (muted category, push off, quiet hours hold it)."""
    devices = store.devices_of(db, user_ids)
    if not devices:
        return []
    prefs = store.preferences_of(db, list({d["user_id"] for d in devices}))
    groups = {}
    for device in devices:
        p = domain.prefs_view(prefs.get(device["user_id"]))
        if "push" not in domain.provider_channels(template, p):
            continue
        due = domain.quiet_until(now, p["quiet_hours"]) or now
        groups.setdefault((due, p["language"], device["platform"]), []).append(device)
    out = []
    for (due, language, platform), members in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1], g[0][2])):
        rendered = templates.render(template, "push", data, language)
        for n in range(0, len(members), max_tokens):
            chunk = members[n:n + max_tokens]
            doc = domain.dispatch_doc(None, notification_id, template, "push",
                                      rendered, None, "%d devices" % len(chunk),
                                      "%s:%s:%s:%s:%d" % (dedupe_prefix, "now" if due <= now else due.isoformat(),
                                                          language, platform, n),
                                      now, due, platform=platform)
            doc.pop("to_enc")
            doc.update(tokens_enc=[seal_contact(d["token"]) for d in chunk], multicast=len(chunk))
            out.append(doc)
    return out


def _provider(settings, channel):
    return settings.sms if channel == "sms" else settings.push


def send(db, settings, outbox, doc):
    """One attempt at a leased dispatch; record the outcome. Returns the new status."""
    attempts = doc["attempts"] + 1
    error = None
    try:
        if doc.get("multicast"):
            to = [crypto.decrypt(t, CONTACT) for t in doc["tokens_enc"]]
            settings.push_pacer.wait()  # the provider's limit of multicast calls a second
        else:
            to = crypto.decrypt(doc["to_enc"], CONTACT)
        _provider(settings, doc["channel"]).send(domain.provider_message(doc, to), timeout=settings.provider_timeout,
                                                 delivery_id=doc["_id"])
    except ProviderError as exc:
        error = str(exc)
    except Exception as exc:  # a broken message must not stop the others
        log.exception("dispatch %s could not be sent", doc["_id"])
        error = "%s: %s" % (type(exc).__name__, exc)
    now = clock.CLOCK.now()
    if error is None:
        return _final(db, outbox, doc, attempts, "delivered", None, now)
    if attempts >= settings.max_attempts:
        log.warning("%s %s failed after %d attempts: %s", doc["channel"], doc["_id"], attempts, error)
        return _final(db, outbox, doc, attempts, "failed", error, now)
    delay = domain.backoff_seconds(attempts, settings.retry_base, settings.retry_cap)
    store.settle(db.dispatches, doc, {"$set": {"attempts": attempts, "last_error": error,
                                               "due_at": now + timedelta(seconds=delay)}})
    return "pending"


def _final(db, outbox, doc, attempts, status, error, now):
    update = {"$set": {"status": status, "attempts": attempts, "last_error": error, "finished_at": now}}
    if status == "delivered":
        update["$unset"] = {"to_enc": "", "tokens_enc": ""}  # the contacts are not needed any more

    def txn(session):
        if store.settle(db.dispatches, doc, update, session=session):
            _announce(outbox, session, dict(doc, attempts=attempts), error)
            if doc.get("multicast") and status == "delivered":
                store.count_pushes(db, doc["notification_id"], doc["multicast"], session)
    transaction(db, txn)
    return status


def _announce(outbox, session, doc, error):
    """``notification_delivered`` or, with an ``error``, ``notification_failed``, in the caller's transaction."""
    if error is None:
        outbox.add(session, "notification_delivered", domain.outcome_data(doc), subject=doc["notification_id"])
    else:
        outbox.add(session, "notification_failed", domain.outcome_data(doc, error), subject=doc["notification_id"])


def send_now(db, settings, outbox, body):
    """Send an SMS at once (the login code): retried with backoff within ``NOTIFY_OTP_BUDGET_SECONDS``; raises
    ``ServiceUnavailable`` when the provider did not take it. Neither the code nor the text is stored."""
    rendered = templates.render(body["template"], "sms", body["params"])
    message = {"to": body["to"], "template": body["template"], "params": body["params"], "text": rendered["text"]}
    started = time.monotonic()
    attempts, error = 0, None
    now = clock.CLOCK.now()
    delivery_id = domain.new_id(now)  # the record's id, and X-UnionHub-Delivery on every attempt
    while True:
        attempts += 1
        remaining = settings.otp_budget - (time.monotonic() - started)
        try:
            settings.sms.send(message, timeout=max(0.5, min(settings.provider_timeout, remaining)),
                              delivery_id=delivery_id)
            error = None
            break
        except ProviderError as exc:
            error = str(exc)
        delay = domain.backoff_seconds(attempts, 0.2, 1.0)
        if attempts >= settings.otp_attempts or time.monotonic() - started + delay >= settings.otp_budget:
            break
        eventlet.sleep(delay)
    now = clock.CLOCK.now()
    status = "delivered" if error is None else "failed"
    record = {"_id": delivery_id, "dedupe": "direct:%s" % delivery_id, "notification_id": None,
              "user_id": None, "channel": "sms", "template": body["template"],
              "category": domain.FLOWS[body["template"]].category, "to_masked": mask_phone(body["to"]),
              "status": status, "attempts": attempts, "last_error": error, "created_at": now, "finished_at": now,
              "due_at": now, "lease_until": domain.NO_LEASE}
    record["notification_id"] = record["_id"]

    def txn(session):
        store.add_dispatch_record(db, record, session)
        _announce(outbox, session, record, error)
    transaction(db, txn)
    if error is not None:
        log.warning("%s SMS to %s failed after %d attempt(s): %s", body["template"], mask_phone(body["to"]),
                    attempts, error)
        raise ServiceUnavailable("The SMS provider did not take the message; try again.", code="SMS_UNAVAILABLE")
    return {"id": record["_id"], "status": "sent", "attempts": attempts}

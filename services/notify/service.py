"""notify: inbox, SMS and push through providers, templates, preferences, the member projection, announcements and
integrator webhooks.

RPC (the gateway's Notify routes, and membership's ``send_sms`` for the login code); reliable idempotent handlers of
membership, benefits and jobs events (projection and inbox entries) and of every event (webhook deliveries); three
pollers that send due SMS / push messages, deliver webhooks and fan out announcements. Events: ``notification_delivered``
and ``notification_failed`` (SMS and push), through the outbox.
"""
import logging

import eventlet

from unionhub_kit import clock, crypto, events, idempotency, projection, topology
from unionhub_kit.batching import Batcher
from unionhub_kit.config import timer
from unionhub_kit.consumer import idempotent, on_event, run_once
from unionhub_kit.errors import NotFound, ServiceUnavailable, validation_error
from unionhub_kit.logs import guarded
from unionhub_kit.memory import ProcessMemory
from unionhub_kit.metrics import ServiceMetrics
from unionhub_kit.mongo import Mongo
from unionhub_kit.outbox import Outbox
from unionhub_kit.ping import ping as _ping
from unionhub_kit.rpc import Rpc, rpc
from unionhub_kit.schema import load

from . import delivery, domain, fanout, inbox, routing, schemas, store, webhooks
from .runtime import SettingsProvider, Wake, poll

log = logging.getLogger("unionhub.notify")

POLL_SECONDS = 1.0  # idle interval of the pollers (NOTIFY_POLL_SECONDS overrides it)
CLAIM = 100  # messages leased per poll


class NotifyService:
    name = "notify"

    db = Mongo(indexes=store.ensure_indexes)
    outbox = Outbox()
    metrics = ServiceMetrics()  # entrypoint latency/errors, request id in every log line
    settings = SettingsProvider()
    wake = Wake()
    batches = Batcher(window_ms=2)  # group commit of coupon_claimed inbox entries, and of webhook look-ups
    membership = Rpc("membership")  # a new member's phone (events carry the masked form only)
    membership_now = Rpc("membership", timeout=2)  # a member the projection lacks (inbox reads: short, skippable)
    recent = ProcessMemory(inbox.Recent)  # the last year's announcements by key, for inbox pages

    @rpc
    def ping(self):
        return _ping(self.name, self.db)

    # ---- SMS for other services -----------------------------------------------------------------------------
    @rpc
    def send_sms(self, payload):
        """``{to, template: "otp", params: {code}}``: sent now (preferences do not apply); returns once the provider
        took it, or raises ``ServiceUnavailable`` (``SMS_UNAVAILABLE``) after bounded retries."""
        body = load(schemas.SendSms, payload)
        return delivery.send_now(self.db, self.settings, self.outbox, body)

    # ---- inbox ----------------------------------------------------------------------------------------------
    @rpc
    def list_notifications(self, actor, query=None):
        user = domain.require_role(actor, "member")["sub"]
        q = load(schemas.NotificationsQuery, query or {})
        return inbox.page(self.db, user, q["unread"], domain.decode_cursor(q["cursor"]), q["limit"], self.recent,
                          member=self._member(user))

    def _member(self, user_id):
        """The member as the projection knows them; when it does not know them as active yet (membership answered
        a join or an approval a moment ago and its event is on its way), as membership says: read your own writes,
        one short RPC on this rare path. Nothing is written from that answer (the event brings the projection with
        the member's phone; a projection written first would make that event look older and be skipped)."""
        member = store.member(self.db, user_id)
        if (member or {}).get("status") == "active":
            return member
        try:
            state = self.membership_now.member_state(user_id)
        except Exception as exc:  # noqa: BLE001  (membership away or failing: the inbox is still read)
            log.warning("membership did not answer for a member the projection lacks: %s", exc)
            return member
        if state is None or state.get("status") != "active":
            return member
        since = events.parse_time(state.get("joined_at") or state["as_of"])  # announcements from then on reach them
        return dict(projection.member_fields(state), _id=user_id, active_since=since)

    @rpc
    def mark_read(self, actor, notification_id):
        user = domain.require_role(actor, "member")["sub"]
        doc = None
        if isinstance(notification_id, str) and domain.ID_RE.match(notification_id):
            doc = inbox.mark_read(self.db, user, notification_id, clock.now())
        if doc is None:
            raise NotFound("No such notification.")
        return domain.notification_view(doc)

    # ---- preferences and devices ----------------------------------------------------------------------------
    @rpc
    def get_preferences(self, actor):
        user = domain.require_role(actor, "member")["sub"]
        return domain.prefs_view(store.preferences(self.db, user))

    @rpc
    def put_preferences(self, actor, payload):
        user = domain.require_role(actor, "member")["sub"]
        body = load(schemas.Preferences, payload)
        if not body:
            return domain.prefs_view(store.preferences(self.db, user))
        return domain.prefs_view(store.update_preferences(self.db, user, body, clock.now()))

    @rpc
    def register_device(self, actor, payload, idempotency_key=None):
        user = domain.require_role(actor, "member")["sub"]
        body = load(schemas.Device, payload)

        def txn(session):
            doc = store.register_device(self.db, user, body["platform"], body["token"], clock.now(), session)
            return domain.device_view(doc)
        return store.run_idempotent(self.db, idempotency.scope("register_device", user), idempotency_key, body, txn)

    @rpc
    def list_devices(self, actor):
        """The member's registered devices (tokens masked), newest first."""
        user = domain.require_role(actor, "member")["sub"]
        docs = sorted(store.devices_of(self.db, [user]), key=lambda d: d["created_at"], reverse=True)
        return {"items": [domain.device_view(d) for d in docs]}

    @rpc
    def delete_device(self, actor, device_id):
        """Unregister a device (the app logs out): no more push messages to it."""
        user = domain.require_role(actor, "member")["sub"]
        if not isinstance(device_id, str) or not store.delete_device(self.db, user, device_id):
            raise NotFound("You have no such device.")

    # ---- announcements --------------------------------------------------------------------------------------
    @rpc
    def create_announcement(self, actor, payload, idempotency_key=None):
        actor = domain.require_role(actor, "union_admin")
        body = load(schemas.Announcement, payload)
        audience = body["audience"]
        domain.check_audience_scope(audience, actor.get("scope"), store.union_codes(self.db, audience["union_ids"]))
        doc = domain.announcement_doc(actor, body, clock.now())

        def txn(session):
            store.add_announcement(self.db, doc, session)
            return {"id": doc["_id"], "status": doc["status"]}
        result = store.run_idempotent(self.db, idempotency.scope("create_announcement", actor["sub"]), idempotency_key, body, txn)
        self.wake("fan_out")
        return result

    @rpc
    def get_announcement(self, actor, announcement_id):
        actor = domain.require_role(actor, "union_admin")
        doc = store.announcement(self.db, announcement_id) if isinstance(announcement_id, str) else None
        return domain.announcement_view(domain.own_announcement(doc, actor))

    # ---- webhooks -------------------------------------------------------------------------------------------
    @rpc
    def create_webhook(self, actor, payload, idempotency_key=None):
        owner = domain.require_role(actor, "integrator")["sub"]
        body = load(schemas.Webhook, payload)
        problem = domain.target_problem(body["url"], self.settings.webhook_allow_private)
        if problem:
            raise validation_error({"url": [problem]})
        now = clock.now()
        doc = {"_id": domain.new_id(now), "owner": owner, "url": body["url"], "event_types": body["event_types"],
               "secret_enc": crypto.encrypt(body["secret"], "webhook-secret"), "created_at": now}

        def txn(session):
            store.add_webhook(self.db, doc, session)
            return domain.webhook_view(doc)
        fingerprint = dict(body, secret=crypto.keyed_hash(body["secret"], "webhook-secret"))
        view = store.run_idempotent(self.db, idempotency.scope("create_webhook", owner), idempotency_key, fingerprint,
                                    txn)
        # its events are routed to the webhook queue before the registration is answered (a replay binds again:
        # the first answer may have been lost with a crash before this line)
        try:
            routing.want(self.settings.amqp_uri, view["event_types"])
        except Exception as exc:  # noqa: BLE001  (the broker away: stored, but its events are not routed yet)
            log.warning("webhook %s stored but not yet routed: %s", view["id"], exc)
            raise ServiceUnavailable("The webhook is stored but its events cannot be routed to it yet (the broker "
                                     "did not answer); retry with the same Idempotency-Key.")
        return view

    @rpc
    def list_webhooks(self, actor, query=None):
        owner = domain.require_role(actor, "integrator")["sub"]
        q = load(schemas.WebhooksQuery, query or {})
        docs = store.list_webhooks(self.db, owner, domain.decode_cursor(q["cursor"]), q["limit"])
        return domain.page(docs, q["limit"], domain.webhook_view)

    @rpc
    def delete_webhook(self, actor, webhook_id):
        owner = domain.require_role(actor, "integrator")["sub"]
        if not store.delete_webhook(self.db, owner, webhook_id):
            raise NotFound("No such webhook.")
        self.webhook_routes()  # stop routing the types no webhook wants any more

    def _own_webhook(self, actor, webhook_id):
        owner = domain.require_role(actor, "integrator")["sub"]
        hook = store.webhook(self.db, webhook_id) if isinstance(webhook_id, str) else None
        if hook is None or hook["owner"] != owner:
            raise NotFound("No such webhook.")
        return hook

    @rpc
    def list_deliveries(self, actor, webhook_id, query=None):
        hook = self._own_webhook(actor, webhook_id)
        q = load(schemas.DeliveriesQuery, query or {})
        docs = store.list_deliveries(self.db, hook["_id"], q["status"], domain.decode_cursor(q["cursor"]),
                                     q["limit"])
        return domain.page(docs, q["limit"], domain.delivery_view)

    @rpc
    def replay_delivery(self, actor, webhook_id, delivery_id):
        hook = self._own_webhook(actor, webhook_id)
        doc = store.replay_delivery(self.db, hook["_id"], delivery_id, clock.now()) \
            if isinstance(delivery_id, str) else None
        if doc is None:
            raise NotFound("No such delivery.")
        self.wake("deliver_webhooks")
        return domain.delivery_view(doc)

    # ---- membership events: the projection and their inbox entries ----------------------------------------
    @on_event("membership", "member_joined")
    def on_member_joined(self, event):
        """Project the member, welcome them. The event carries the masked phone only: the phone comes from
        membership by RPC (before the transaction), and notify keeps it encrypted under its own key for the SMS of
        later events and announcements (asking membership for millions of phones at fan-out time would not do)."""
        phone = self._contact_phone(event["data"]["user_id"])
        run_once(self.db, event, lambda session: self._member_joined(session, event, phone),
                 handler="on_member_joined")

    def _contact_phone(self, user_id):
        try:
            return self.membership.contact_phone(user_id)["phone"]
        except NotFound:  # erased meanwhile, or never had a phone: no SMS for them
            log.warning("member_joined: membership has no phone for this member; no SMS")
            return None

    def _member_joined(self, session, event, phone):
        d = event["data"]
        fields = dict(projection.member_fields(d), active_since=projection.event_time(event))
        if phone:
            fields.update(phone_enc=delivery.seal_contact(phone), phone_masked=d["phone_masked"])
        store.project_member(self.db, d["user_id"], fields, projection.event_time(event), session)
        phones = {d["user_id"]: (fields["phone_enc"], d["phone_masked"])} if phone else None
        self._notify(session, event, "member_joined", [d["user_id"]], d, phones=phones)

    @on_event("membership", "member_rejected")
    @idempotent
    def on_member_rejected(self, event, session):
        d = event["data"]
        store.project_member(self.db, d["user_id"], {"member_id": d["member_id"], "union_id": d["union_id"],
                                                     "status": "rejected"}, projection.event_time(event), session)
        self._notify(session, event, "member_rejected", [d["user_id"]], d)

    @on_event("membership", "member_transferred")
    @idempotent
    def on_member_transferred(self, event, session):
        d = event["data"]
        store.project_member(self.db, d["user_id"], projection.member_fields(d), projection.event_time(event), session)
        self._notify(session, event, "member_transferred", [d["user_id"]], d)

    @on_event("membership", "member_left")
    @idempotent
    def on_member_left(self, event, session):
        d = event["data"]
        unset = ("phone_enc", "phone_masked") if d["erased"] else ()
        store.project_member(self.db, d["user_id"], {"member_id": d["member_id"], "status": "left"},
                             projection.event_time(event), session, unset=unset)
        if d["erased"]:
            store.erase_member(self.db, d["user_id"], session)

    # ---- benefits and jobs events ---------------------------------------------------------------------------
    @on_event("benefits", "coupon_claimed")
    def on_coupon_claimed(self, event):
        """The busiest event (a grab issues hundreds a second): the ones this process is handling at once are
        written together (``_coupons_claimed``)."""
        self.batches.submit("coupon_claimed", event, self._coupons_claimed)

    def _coupons_claimed(self, _key, envs):
        """A batch of ``coupon_claimed``: inbox entries, then push messages, one ``insert_many`` each, idempotent by
        their natural keys instead of a record per event in a transaction. Each entry and message carries a unique
        ``dedupe`` key made of the event id and the member (``evt:<event id>:<user>``), so a redelivered event (or
        one twice in a batch) inserts nothing again, and an event whose writes were cut short (a crash between the
        two inserts) is completed by its redelivery, its messages naming the entry stored the first time. This is
        the busiest handler of a grab: no transaction and no processed-event record saves two of its five store
        operations and a document per claim."""
        now = clock.now()
        inbox, dispatches = delivery.plan_many(self.db, None, "coupon_claimed", [
            ([e["data"]["user_id"]], e["data"], "evt:%s" % e["id"]) for e in envs], now)
        existing = store.add_notifications_once(self.db, inbox)
        if existing:
            stored = {doc["_id"]: existing.get(doc["dedupe"], doc["_id"]) for doc in inbox}
            for d in dispatches:
                d["notification_id"] = stored.get(d["notification_id"], d["notification_id"])
        store.add_dispatches_once(self.db, dispatches)
        if dispatches:
            self.wake("deliver_due")
        return [None] * len(envs)

    @on_event("benefits", "coupon_redeemed")
    @idempotent
    def on_coupon_redeemed(self, event, session):
        self._notify(session, event, "coupon_redeemed", [event["data"]["user_id"]], event["data"])

    @on_event("jobs", "application_status_changed")
    @idempotent
    def on_application_status_changed(self, event, session):
        self._notify(session, event, "application_status_changed", [event["data"]["user_id"]], event["data"])

    @on_event("jobs", "job_alert_matched")
    @idempotent
    def on_job_alert_matched(self, event, session):
        d = event["data"]
        self._notify(session, event, "job_alert_matched", list(dict.fromkeys(d["user_ids"])), d)

    def _notify(self, session, event, template, user_ids, data, phones=None):
        """Inbox entries (now) and SMS / push messages (now or after quiet hours) for an event."""
        inbox, dispatches = delivery.plan(self.db, session, template, user_ids, data, "evt:%s" % event["id"],
                                          clock.now(), phones=phones)
        self._write_notifications(session, inbox, dispatches)

    def _write_notifications(self, session, inbox, dispatches):
        store.add_notifications(self.db, inbox, session)
        store.add_dispatches(self.db, dispatches, session)
        if dispatches:
            self.wake("deliver_due")

    # ---- every event: integrator webhooks -------------------------------------------------------------------
    @on_event(topology.ALL)
    def on_any_event(self, event):
        """Every event passes here; most have no subscriber. Those are answered by one indexed query for all the
        events this process is handling at once (``_any_events``), with no transaction and nothing recorded
        (nothing is written, so a redelivery changes nothing either). An event with subscribers gets its
        deliveries in an idempotent transaction. A webhook registered between the two reads is as if registered
        just after the event."""
        self.batches.submit("any", event, self._any_events)

    def _any_events(self, _key, envs):
        types = ["%s.%s" % events.name_of(e) for e in envs]
        subscribed = store.subscribed_types(self.db, types)
        out = []
        for event, event_type in zip(envs, types):
            try:
                if event_type in subscribed:
                    run_once(self.db, event, lambda session: self._queue_webhook_deliveries(
                        session, event, event_type), handler="on_any_event")
                out.append(None)
            except Exception as exc:  # noqa: BLE001  (this event is retried; the others of the batch are done)
                out.append(exc)
        return out

    def _queue_webhook_deliveries(self, session, event, event_type):
        hooks = store.webhooks_for(self.db, event_type, session)
        if hooks:
            now = clock.now()
            store.add_deliveries(self.db, [domain.delivery_doc(h, event, now) for h in hooks], session)
            self.wake("deliver_webhooks")

    @timer("WEBHOOK_ROUTES_SECONDS", eager=True)
    def webhook_routes(self):
        """The webhook queue's bindings: exactly the types of the stored webhooks (``routing``)."""
        try:
            routing.sync(self.settings.amqp_uri, self.db)
        except Exception as exc:  # broker or store away: the next tick tries again
            log.warning("could not update the webhook queue's bindings: %s", exc)

    # ---- pollers --------------------------------------------------------------------------------------------
    @poll(POLL_SECONDS)
    def deliver_due(self):
        """Send the SMS and push messages whose time has come (one attempt each, concurrently)."""
        s = self.settings
        docs = store.claim_due(self.db.dispatches, clock.now(), CLAIM, s.lease_seconds, s.owner)
        pool = eventlet.GreenPool(s.concurrency)
        for doc in docs:
            pool.spawn_n(guarded(delivery.send, "dispatch %s" % doc["_id"]), self.db, s, self.outbox, doc)
        pool.waitall()
        return len(docs) == CLAIM

    @poll(POLL_SECONDS)
    def deliver_webhooks(self):
        """POST the webhook deliveries whose time has come (one attempt each, concurrently)."""
        s = self.settings
        docs = store.claim_due(self.db.webhook_deliveries, clock.now(), CLAIM, s.webhook_timeout * 3 + 5,
                               s.owner)
        pool = eventlet.GreenPool(s.concurrency)
        for doc in docs:
            pool.spawn_n(guarded(webhooks.send, "webhook delivery %s" % doc["_id"]), self.db, s, doc)
        pool.waitall()
        return len(docs) == CLAIM

    @poll(POLL_SECONDS)
    def fan_out(self):
        """Work on the oldest unfinished announcement for a while (resuming where it stopped)."""
        more, pushes = fanout.run(self.db, self.settings)
        if pushes:
            self.wake("deliver_due")
        return more


"""Notify routes of API.md: the member's inbox, preferences and devices; announcements; integrator webhooks.

Webhook event types are the channel names of ``/asyncapi.json``, ``<service>.<event>`` (for example
``membership.member_joined``); a bare event name (``member_joined``) is accepted and answered qualified.
"""
from services.notify import schemas

from ..framework import route

TAGS = ["Notify"]
MEMBER = ["member"]
ADMIN = ["union_admin"]
INTEGRATOR = ["integrator"]


@route("GET", "/api/v1/members/me/notifications", roles=MEMBER, query=schemas.NotificationsQuery, tags=TAGS,
       summary="Your inbox, newest first (?unread=true for unread only)")
def list_notifications(gw, call):
    return gw.notify.list_notifications(call.actor, call.query)


@route("POST", "/api/v1/members/me/notifications/<notification_id>/read", roles=MEMBER, tags=TAGS,
       summary="Mark one of your notifications read", errors=("404 NOT_FOUND",))
def mark_read(gw, call):
    return gw.notify.mark_read(call.actor, call.path_params["notification_id"])


@route("GET", "/api/v1/members/me/preferences", roles=MEMBER, tags=TAGS,
       summary="Your notification preferences (defaults until you set them)")
def get_preferences(gw, call):
    return gw.notify.get_preferences(call.actor)


@route("PUT", "/api/v1/members/me/preferences", roles=MEMBER, body=schemas.Preferences, tags=TAGS,
       summary="Set your preferences: SMS / push switches, muted categories (no SMS or push for them), quiet hours "
               "(China time; SMS and push wait until they end); the fields you send replace the stored ones")
def put_preferences(gw, call):
    return gw.notify.put_preferences(call.actor, call.body)


@route("POST", "/api/v1/members/me/devices", roles=MEMBER, body=schemas.Device, status=201, idempotent=True,
       tags=TAGS, summary="Register a device for push notifications",
       errors=("422 IDEMPOTENCY_KEY_REUSED",))
def register_device(gw, call):
    return gw.notify.register_device(call.actor, call.body, call.idempotency_key)


@route("GET", "/api/v1/members/me/devices", roles=MEMBER, tags=TAGS,
       summary="Your registered devices (tokens masked), newest first")
def list_devices(gw, call):
    return gw.notify.list_devices(call.actor)


@route("DELETE", "/api/v1/members/me/devices/<device_id>", roles=MEMBER, status=204, tags=TAGS,
       summary="Unregister one of your devices (on logout): it gets no more push messages",
       errors=("404 NOT_FOUND",))
def delete_device(gw, call):
    gw.notify.delete_device(call.actor, call.path_params["device_id"])


@route("POST", "/api/v1/announcements", roles=ADMIN, body=schemas.Announcement, status=202, idempotent=True,
       tags=TAGS, summary="Announce to the active members of an audience in your scope (fan-out in the background)",
       errors=("403 OUT_OF_SCOPE", "422 IDEMPOTENCY_KEY_REUSED"))
def create_announcement(gw, call):
    return gw.notify.create_announcement(call.actor, call.body, call.idempotency_key)


@route("GET", "/api/v1/announcements/<announcement_id>", roles=ADMIN, tags=TAGS,
       summary="An announcement's progress: status (pending, running, done), recipients, delivered",
       errors=("404 NOT_FOUND",))
def get_announcement(gw, call):
    return gw.notify.get_announcement(call.actor, call.path_params["announcement_id"])


@route("POST", "/api/v1/webhooks", roles=INTEGRATOR, body=schemas.Webhook, status=201, idempotent=True, tags=TAGS,
       summary="Register a webhook: matching events are POSTed as CloudEvents JSON signed X-UnionHub-Signature",
       errors=("422 IDEMPOTENCY_KEY_REUSED",))
def create_webhook(gw, call):
    return gw.notify.create_webhook(call.actor, call.body, call.idempotency_key)


@route("GET", "/api/v1/webhooks", roles=INTEGRATOR, query=schemas.WebhooksQuery, tags=TAGS,
       summary="Your webhooks")
def list_webhooks(gw, call):
    return gw.notify.list_webhooks(call.actor, call.query)


@route("DELETE", "/api/v1/webhooks/<webhook_id>", roles=INTEGRATOR, status=204, tags=TAGS,
       summary="Delete one of your webhooks", errors=("404 NOT_FOUND",))
def delete_webhook(gw, call):
    gw.notify.delete_webhook(call.actor, call.path_params["webhook_id"])


@route("GET", "/api/v1/webhooks/<webhook_id>/deliveries", roles=INTEGRATOR, query=schemas.DeliveriesQuery,
       tags=TAGS, summary="A webhook's delivery log: event id, attempts, last status and error",
       errors=("404 NOT_FOUND",))
def list_deliveries(gw, call):
    return gw.notify.list_deliveries(call.actor, call.path_params["webhook_id"], call.query)


@route("POST", "/api/v1/webhooks/<webhook_id>/deliveries/<delivery_id>/replay", roles=INTEGRATOR, status=202,
       tags=TAGS, summary="Send one delivery again", errors=("404 NOT_FOUND",))
def replay_delivery(gw, call):
    return gw.notify.replay_delivery(call.actor, call.path_params["webhook_id"], call.path_params["delivery_id"])

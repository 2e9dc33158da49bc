"""SMS and push providers on the real broker and store: the development sink, the signed webhook provider,
retries with backoff against a local HTTP server that fails N times, the final failure and its events."""
import json
import logging

import pytest
from nameko.testing.services import entrypoint_hook

from support.stack import wait_for
from tests.service.notify_support import (Receiver, joined, lines, new_user, notify_config, notify_container, publish,
                                          signature_ok)
from unionhub_kit.errors import ServiceUnavailable, ValidationFailed

SECRET = "sms-provider-secret"


@pytest.fixture
def receiver():
    made = []

    def make(**kw):
        r = Receiver(**kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def start(container_factory, cfg):
    container = notify_container(container_factory, cfg)
    container.start()
    return container


def otp(to="13812345678", code="482913"):
    return {"to": to, "template": "otp", "params": {"code": code}}


def everything_stored(db):
    return json.dumps([list(db[c].find({}, {"_id": 0})) for c in db.list_collection_names()], default=str)


def test_otp_to_the_development_sink_masks_the_code_in_the_log(container_factory, config, tmp_path, db_of, caplog):
    cfg = notify_config(config, tmp_path)
    notify = start(container_factory, cfg)
    caplog.set_level(logging.INFO, logger="unionhub.notify.providers")
    with entrypoint_hook(notify, "send_sms") as send_sms:
        out = send_sms(otp(code="771204"))
        assert out["status"] == "sent" and out["attempts"] == 1
        with pytest.raises(ValidationFailed):
            send_sms({"to": "13812345678", "template": "otp", "params": {}})
        with pytest.raises(ValidationFailed):
            send_sms({"to": "not-a-phone", "template": "otp", "params": {"code": "123456"}})
    [line] = lines(cfg["SMS_SINK_FILE"])
    assert line["to"] == "13812345678" and line["template"] == "otp" and line["params"] == {"code": "771204"}
    assert "771204" in line["text"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "138****5678" in logged and "771204" not in logged and "13812345678" not in logged
    db = db_of("notify")
    assert "771204" not in everything_stored(db)  # the code is never stored
    event = wait_for(lambda: db.outbox.find_one({"type": "notification_delivered"}))["envelope"]
    assert event["data"]["template"] == "otp" and event["data"]["category"] == "account"
    assert "771204" not in json.dumps(event)


def test_otp_webhook_retried_until_the_provider_takes_it(container_factory, config, tmp_path, db_of, receiver):
    hook = receiver(fail_first=2)
    cfg = notify_config(config, tmp_path, SMS_WEBHOOK_URL=hook.url, SMS_WEBHOOK_SECRET=SECRET)
    notify = start(container_factory, cfg)
    with entrypoint_hook(notify, "send_sms") as send_sms:
        out = send_sms(otp(code="120034"))
    assert out["attempts"] == 3 and len(hook.requests) == 3  # returned only after the provider took it
    for req in hook.requests:
        assert signature_ok(req, SECRET)
        assert req["headers"]["Content-Type"] == "application/json"
    body = hook.json(2)
    assert body == {"to": "13812345678", "template": "otp", "params": {"code": "120034"}, "text": body["text"]}
    assert "120034" in body["text"]
    assert not signature_ok(hook.requests[0], "wrong")
    assert len({r["headers"]["X-UnionHub-Delivery"] for r in hook.requests}) == 1  # one delivery, retried
    replayed = dict(hook.requests[0], headers=dict(hook.requests[0]["headers"], **{
        "X-UnionHub-Timestamp": str(int(hook.requests[0]["headers"]["X-UnionHub-Timestamp"]) + 600)}))
    assert not signature_ok(replayed, SECRET)  # the timestamp is signed: a fresh one on an old body fails
    db = db_of("notify")
    event = wait_for(lambda: db.outbox.find_one({"type": "notification_delivered"}))["envelope"]
    assert event["data"]["attempts"] == 3 and event["data"]["channel"] == "sms"


def test_otp_provider_down_raises_service_unavailable_and_records_the_failure(container_factory, config, tmp_path,
                                                                              db_of, receiver):
    hook = receiver(fail_first=None, fail_status=503)
    cfg = notify_config(config, tmp_path, SMS_WEBHOOK_URL=hook.url, SMS_WEBHOOK_SECRET=SECRET,
                        NOTIFY_OTP_ATTEMPTS=3)
    notify = start(container_factory, cfg)
    with entrypoint_hook(notify, "send_sms") as send_sms:
        with pytest.raises(ServiceUnavailable) as exc:
            send_sms(otp(code="909090"))
    assert exc.value.code == "SMS_UNAVAILABLE"
    assert len(hook.requests) == 3  # bounded
    db = db_of("notify")
    event = wait_for(lambda: db.outbox.find_one({"type": "notification_failed"}))["envelope"]
    assert event["data"]["attempts"] == 3 and "503" in event["data"]["error"]
    assert "909090" not in everything_stored(db)


def test_welcome_sms_retried_with_backoff_then_delivered(container_factory, config, tmp_path, db_of, receiver):
    hook = receiver(fail_first=2)
    cfg = notify_config(config, tmp_path, SMS_WEBHOOK_URL=hook.url, SMS_WEBHOOK_SECRET=SECRET,
                        NOTIFY_MAX_ATTEMPTS=4)
    start(container_factory, cfg)
    uid = new_user()
    publish(cfg, "membership", "member_joined", joined(uid, phone="15011112222"))
    db = db_of("notify")
    doc = wait_for(lambda: db.dispatches.find_one({"user_id": uid, "status": "delivered"}))
    assert doc["attempts"] == 3 and doc["last_error"] is None and "to_enc" not in doc
    assert [hook.json(i)["to"] for i in range(3)] == ["15011112222"] * 3
    assert all(signature_ok(r, SECRET) for r in hook.requests)
    assert {r["headers"]["X-UnionHub-Delivery"] for r in hook.requests} == {doc["_id"]}
    # the dispatch id is the provider's idempotency key: the same on every attempt, so a repeat can be dropped
    assert {r["headers"]["Idempotency-Key"] for r in hook.requests} == {doc["_id"]}
    event = wait_for(lambda: db.outbox.find_one({"type": "notification_delivered", "envelope.data.user_id": uid}))
    assert event["envelope"]["data"]["attempts"] == 3


def test_push_provider_failing_every_time_ends_failed_with_an_event(container_factory, config, tmp_path, db_of,
                                                                   receiver):
    hook = receiver(fail_first=None)
    cfg = notify_config(config, tmp_path, PUSH_WEBHOOK_URL=hook.url, PUSH_WEBHOOK_SECRET="push-secret",
                        NOTIFY_MAX_ATTEMPTS=3)
    notify = start(container_factory, cfg)
    uid = new_user()
    with entrypoint_hook(notify, "register_device") as register:
        register({"sub": uid, "role": "member"}, {"platform": "ios", "token": "apns-token-0001"})
    publish(cfg, "benefits", "coupon_claimed", {
        "coupon_id": "c1", "campaign_id": "k1", "user_id": uid, "title": "电影券", "face_value_cents": 3000,
        "expires_at": "2026-12-31T15:59:59.000Z"})
    db = db_of("notify")
    doc = wait_for(lambda: db.dispatches.find_one({"user_id": uid, "status": "failed"}))
    assert doc["attempts"] == 3 and "500" in doc["last_error"] and len(hook.requests) == 3
    body = hook.json(0)
    assert body["to"] == "apns-token-0001" and body["platform"] == "ios" and body["title"] == "领券成功"
    assert signature_ok(hook.requests[0], "push-secret")
    failed = wait_for(lambda: db.outbox.find_one({"type": "notification_failed"}))["envelope"]["data"]
    assert failed == {"notification_id": doc["notification_id"], "user_id": uid, "channel": "push",
                      "category": "benefits", "template": "coupon_claimed", "attempts": 3, "error": doc["last_error"]}
    assert db.notifications.find_one({"_id": doc["notification_id"]})  # the inbox entry is there regardless

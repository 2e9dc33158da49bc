"""Quiet hours with an injectable clock: the inbox entry is immediate, SMS and push wait until the quiet hours end,
then go out (moving notify's clock forward instead of waiting)."""
import datetime

import pytest
from nameko.testing.services import entrypoint_hook

from services.notify import domain
from support.stack import wait_for
from tests.service.notify_support import notify_container, joined, lines, new_user, notify_config, publish
from unionhub_kit import clock


@pytest.fixture(autouse=True)
def reset_clock():
    yield
    clock.CLOCK.offset = datetime.timedelta(0)


def window_around_now():
    """Quiet hours from an hour ago to an hour from now (China time); may cross midnight."""
    local = clock.CLOCK.now().astimezone(domain.CST)
    hhmm = lambda dt: dt.strftime("%H:%M")  # noqa: E731
    return {"start": hhmm(local - datetime.timedelta(hours=1)), "end": hhmm(local + datetime.timedelta(hours=1))}


def test_sms_and_push_held_during_quiet_hours_and_sent_when_they_end(container_factory, config, tmp_path, db_of):
    cfg = notify_config(config, tmp_path)
    notify = notify_container(container_factory, cfg)
    notify.start()
    uid, awake = new_user(), new_user()
    member = {"sub": uid, "role": "member"}
    quiet = window_around_now()
    with entrypoint_hook(notify, "put_preferences") as put:
        assert put(member, {"quiet_hours": quiet})["quiet_hours"] == quiet
    with entrypoint_hook(notify, "register_device") as register:
        register(member, {"platform": "android", "token": "fcm-quiet-0001"})
    publish(cfg, "membership", "member_joined", joined(uid, phone="13600001234"))
    publish(cfg, "membership", "member_joined", joined(awake, phone="13600005678"))  # no quiet hours

    db = db_of("notify")
    entry = wait_for(lambda: db.notifications.find_one({"user_id": uid}))  # the inbox does not wait
    assert entry["template"] == "member_joined"
    held = wait_for(lambda: db.dispatches.count_documents({"user_id": uid}) == 2 and list(
        db.dispatches.find({"user_id": uid})))
    ends = domain.quiet_until(entry["created_at"], quiet)
    assert ends is not None
    for doc in held:
        assert doc["held"] is True and doc["due_at"] == ends
    # the member without quiet hours got theirs; after that the held ones are still pending
    wait_for(lambda: [m for m in lines(cfg["SMS_SINK_FILE"]) if m["to"] == "13600005678"])
    wait_for(lambda: db.dispatches.find_one({"user_id": awake, "status": "delivered"}))
    assert {d["status"] for d in db.dispatches.find({"user_id": uid})} == {"pending"}
    assert not [m for m in lines(cfg["SMS_SINK_FILE"]) if m["to"] == "13600001234"]

    clock.CLOCK.offset = (ends - clock.CLOCK.now()) + datetime.timedelta(seconds=1)  # the quiet hours end
    sms = wait_for(lambda: [m for m in lines(cfg["SMS_SINK_FILE"]) if m["to"] == "13600001234"])
    push = wait_for(lambda: [m for m in lines(cfg["PUSH_SINK_FILE"]) if m["to"] == "fcm-quiet-0001"])
    assert sms[0]["template"] == "member_joined" and push[0]["title"] == "欢迎加入工会"
    wait_for(lambda: db.dispatches.count_documents({"user_id": uid, "status": "delivered"}) == 2)

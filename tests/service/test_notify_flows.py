"""Every notify flow from its originating event to the inbox, on the real broker and store: the member projection,
welcome (inbox + SMS), rejection, transfer, leaving (and erasure), coupons, applications, job alerts; preferences,
devices and push; the inbox RPCs (newest first, cursors, unread, read, own entries only)."""
import pytest
from eventlet import sleep as eventlet_sleep
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_hook, entrypoint_waiter

from services.notify import domain
from support.stack import wait_for
from tests.service.notify_support import notify_container, WAIT, joined, lines, new_user, notify_config, publish
from unionhub_kit import clock, crypto, events
from unionhub_kit.errors import NotFound, ValidationFailed


@pytest.fixture
def cfg(config, tmp_path):
    return notify_config(config, tmp_path)


@pytest.fixture
def notify(container_factory, cfg):
    container = notify_container(container_factory, cfg)
    container.start()
    return container


@pytest.fixture
def db(db_of):
    return db_of("notify")


def member(uid):
    return {"sub": uid, "role": "member", "scope": None, "merchant_id": None, "employer_id": None}


def inbox_of(db, uid):
    return list(db.notifications.find({"user_id": uid}).sort("_id", -1))


def test_member_joined_projects_the_member_and_welcomes_by_inbox_and_sms(notify, cfg, db):
    uid = new_user()
    data = joined(uid, phone="13912345678")
    env = publish(cfg, "membership", "member_joined", data)
    entry = wait_for(lambda: db.notifications.find_one({"user_id": uid}))
    assert entry["category"] == "membership" and data["card_no"] in entry["body"]
    proj = db.members.find_one({"_id": uid})
    assert proj["status"] == "active" and proj["region_code"] == "510104" and proj["union_code"] == "5101040001"
    assert "13912345678" not in str(proj) and crypto.decrypt(proj["phone_enc"], "notify-contact") == "13912345678"
    sms = wait_for(lambda: [m for m in lines(cfg["SMS_SINK_FILE"]) if m["to"] == "13912345678"])
    assert sms[0]["template"] == "member_joined" and data["card_no"] in sms[0]["text"]
    assert sms[0]["params"] == {"card_no": data["card_no"]}
    delivered = wait_for(lambda: db.outbox.find_one({"type": "notification_delivered"}))
    out = delivered["envelope"]["data"]
    assert out["user_id"] == uid and out["channel"] == "sms" and out["template"] == "member_joined"
    assert out["notification_id"] == entry["_id"] and out["attempts"] == 1
    # the same event again (at-least-once delivery): handled, but no second entry, no second SMS
    same = lambda worker_ctx, result, exc_info: worker_ctx.args[0]["id"] == env["id"]  # noqa: E731
    with entrypoint_waiter(notify, "on_member_joined", callback=same, timeout=WAIT):
        event_dispatcher(cfg)("membership", "member_joined", env)
    assert len(inbox_of(db, uid)) == 1
    assert db.dispatches.count_documents({"user_id": uid}) == 1


def test_rejection_transfer_and_leaving(notify, cfg, db):
    uid = new_user()
    publish(cfg, "membership", "member_rejected", {"member_id": "m1", "user_id": uid, "union_id": "g1",
                                                   "reason": "材料不全"})
    entry = wait_for(lambda: db.notifications.find_one({"user_id": uid, "template": "member_rejected"}))
    assert "材料不全" in entry["body"] and entry["category"] == "membership"
    wait_for(lambda: db.members.find_one({"_id": uid, "status": "rejected"}))

    publish(cfg, "membership", "member_joined", joined(uid))
    wait_for(lambda: db.members.find_one({"_id": uid, "status": "active"}))
    moved = dict(joined(uid), union_id="g2", union_code="5107030001", region_code="510703",
                 from_union_id="g1", from_union_code="5101040001")
    for key in ("card_no", "joined_at", "phone_masked"):
        moved.pop(key)
    publish(cfg, "membership", "member_transferred", moved)
    entry = wait_for(lambda: db.notifications.find_one({"user_id": uid, "template": "member_transferred"}))
    assert "5107030001" in entry["body"]
    proj = wait_for(lambda: db.members.find_one({"_id": uid, "union_id": "g2"}))
    assert proj["region_code"] == "510703" and proj["phone_enc"]  # the phone stays

    publish(cfg, "membership", "member_left", {"member_id": moved["member_id"], "user_id": uid, "union_id": "g2",
                                               "erased": False})
    proj = wait_for(lambda: db.members.find_one({"_id": uid, "status": "left"}))
    assert proj["phone_enc"] and len(inbox_of(db, uid)) == 3


def test_leaving_with_erasure_drops_phone_inbox_and_devices(notify, cfg, db):
    uid = new_user()
    publish(cfg, "membership", "member_joined", joined(uid))
    wait_for(lambda: db.notifications.find_one({"user_id": uid}))
    with entrypoint_hook(notify, "register_device") as register:
        register(member(uid), {"platform": "android", "token": "tok-%s" % uid})
    publish(cfg, "membership", "member_left", {"member_id": "m", "user_id": uid, "union_id": "g1", "erased": True})
    proj = wait_for(lambda: db.members.find_one({"_id": uid, "status": "left"}))
    assert "phone_enc" not in proj and "phone_masked" not in proj
    assert inbox_of(db, uid) == [] and db.devices.count_documents({"user_id": uid}) == 0


def test_an_older_event_does_not_undo_a_newer_one(notify, cfg, db):
    uid = new_user()
    publish(cfg, "membership", "member_left", {"member_id": "m", "user_id": uid, "union_id": "g1", "erased": False})
    wait_for(lambda: db.members.find_one({"_id": uid, "status": "left"}))
    stale = events.build("membership", "member_joined", joined(uid),
                         time=clock.now().replace(year=2020))  # arrives late, happened earlier
    event_dispatcher(cfg)("membership", "member_joined", stale)
    wait_for(lambda: db.notifications.find_one({"user_id": uid}))  # still welcomed in the inbox
    assert db.members.find_one({"_id": uid})["status"] == "left"


def test_benefits_and_jobs_events_reach_the_inbox(notify, cfg, db):
    uid, other = new_user(), new_user()
    publish(cfg, "benefits", "coupon_claimed", {
        "coupon_id": "c1", "campaign_id": "k1", "user_id": uid, "title": "满100减20", "face_value_cents": 2000,
        "expires_at": "2026-12-31T15:59:59.000Z", "welcome": True})
    publish(cfg, "benefits", "coupon_redeemed", {
        "coupon_id": "c1", "campaign_id": "k1", "user_id": uid, "merchant_id": "mer1", "title": "满100减20",
        "face_value_cents": 2000, "redeemed_at": "2026-06-01T04:00:00.000Z"})
    publish(cfg, "jobs", "application_status_changed", {
        "application_id": "a1", "job_id": "j1", "job_title": "焊工", "employer_id": "e1", "user_id": uid,
        "status": "interview"})
    publish(cfg, "jobs", "job_alert_matched", {"job_id": "j2", "title": "外卖骑手", "employer_name": "蜀道快递",
                                               "region_code": "510104", "user_ids": [uid, other, uid]})
    wait_for(lambda: len(inbox_of(db, uid)) == 4)
    by_template = {e["template"]: e for e in inbox_of(db, uid)}
    assert by_template["coupon_claimed"]["category"] == "benefits"
    assert "20 元" in by_template["coupon_claimed"]["body"] and "2026-12-31" in by_template["coupon_claimed"]["body"]
    assert by_template["coupon_redeemed"]["category"] == "benefits"
    assert by_template["application_status_changed"]["category"] == "jobs"
    assert "邀请面试" in by_template["application_status_changed"]["body"]
    assert "外卖骑手" in by_template["job_alert_matched"]["body"]
    assert [e["template"] for e in wait_for(lambda: inbox_of(db, other))] == ["job_alert_matched"]


def test_a_burst_of_coupon_claimed_is_written_in_batches_each_event_once(notify, cfg, db):
    """40 coupon_claimed events at once, 5 of them delivered twice (at least once): batched (fewer inserts than
    events), one inbox entry per event, a push for the member with a device, nothing twice (natural keys: no
    processed-event record is written for this handler)."""
    from unionhub_kit.batching import Batcher
    group = next(d for d in notify.extensions if isinstance(d, Batcher)).group
    group.window = 0.5
    users = [new_user() for _ in range(40)]
    with entrypoint_hook(notify, "register_device") as register:
        register(member(users[0]), {"platform": "ios", "token": "burst-%s" % users[0]})
    dispatch = event_dispatcher(cfg)
    envs = [events.build("benefits", "coupon_claimed", {
        "coupon_id": "c%d" % n, "campaign_id": "k1", "user_id": u, "title": "满30减10", "face_value_cents": 1000,
        "expires_at": "2026-12-31T15:59:59.000Z"}) for n, u in enumerate(users)]
    before, items_before = group.batches, group.items
    for env in envs + envs[:5]:
        dispatch("benefits", "coupon_claimed", env)
    wait_for(lambda: db.notifications.count_documents({"user_id": {"$in": users}}) == 40)
    eventlet_sleep(0.5)  # the redeliveries are handled too
    assert db.notifications.count_documents({"user_id": {"$in": users}}) == 40
    assert all(db.notifications.count_documents({"user_id": u, "template": "coupon_claimed"}) == 1 for u in users)
    assert db.dispatches.count_documents({"user_id": users[0], "channel": "push"}) == 1
    wait_for(lambda: group.items - items_before >= 45)  # 45 deliveries (no webhook wants them: none to that queue)
    # batched: fewer batches than deliveries (how many fewer depends on how fast the broker hands them over)
    assert group.batches - before < group.items - items_before
    assert db.processed_events.count_documents({"_id": {"$regex": "^on_coupon_claimed"}}) == 0


def test_a_coupon_claimed_cut_short_is_completed_by_its_redelivery(notify, cfg, db):
    """The inbox entry of an event was written but not its push message (a crash between the two inserts): the
    redelivered event writes the message, naming the entry stored the first time, and no second entry."""
    uid = new_user()
    with entrypoint_hook(notify, "register_device") as register:
        register(member(uid), {"platform": "android", "token": "cut-%s" % uid})
    env = events.build("benefits", "coupon_claimed", {
        "coupon_id": "c1", "campaign_id": "k1", "user_id": uid, "title": "满30减10", "face_value_cents": 1000,
        "expires_at": "2026-12-31T15:59:59.000Z"})
    first = domain.notification_doc(uid, "coupon_claimed", {"title": "t", "body": "b"}, "evt:%s:%s" % (env["id"], uid),
                                    clock.now())
    db.notifications.insert_one(first)
    event_dispatcher(cfg)("benefits", "coupon_claimed", env)
    wait_for(lambda: db.dispatches.count_documents({"user_id": uid}) == 1)
    assert db.dispatches.find_one({"user_id": uid})["notification_id"] == first["_id"]
    assert db.notifications.count_documents({"user_id": uid}) == 1


def test_preferences_language_sms_switch_and_muting(notify, cfg, db):
    uid = new_user()
    with entrypoint_hook(notify, "get_preferences") as get:
        assert get(member(uid)) == domain.prefs_view(None)
    with entrypoint_hook(notify, "put_preferences") as put:
        prefs = put(member(uid), {"sms": False, "language": "en", "muted_categories": ["benefits"]})
        assert prefs["sms"] is False and prefs["push"] is True and prefs["muted_categories"] == ["benefits"]
        with pytest.raises(ValidationFailed) as exc:
            put(member(uid), {"muted_categories": ["spam"]})
        assert "muted_categories.0" in exc.value.errors
        assert put(member(uid), {"push": False})["muted_categories"] == ["benefits"]  # other fields kept
    with entrypoint_hook(notify, "register_device") as register:
        register(member(uid), {"platform": "ios", "token": "ios-token-%s" % uid})
    publish(cfg, "membership", "member_joined", joined(uid, phone="13700001111"))
    entry = wait_for(lambda: db.notifications.find_one({"user_id": uid}))
    assert entry["title"] == "Welcome to the union"
    assert db.dispatches.count_documents({"user_id": uid}) == 0  # SMS switched off, push switched off


def test_push_goes_to_every_registered_device_unless_muted(notify, cfg, db):
    uid = new_user()
    with entrypoint_hook(notify, "register_device") as register:
        first = register(member(uid), {"platform": "android", "token": "droid-%s" % uid})
        register(member(uid), {"platform": "ios", "token": "apple-%s" % uid})
        again = register(member(uid), {"platform": "android", "token": "droid-%s" % uid})
        assert again["id"] == first["id"] and "droid-" + uid not in str(first)  # one device, token masked
    publish(cfg, "benefits", "coupon_claimed", {
        "coupon_id": "c1", "campaign_id": "k1", "user_id": uid, "title": "洗车券", "face_value_cents": 1500,
        "expires_at": "2026-12-31T15:59:59.000Z"})
    pushes = wait_for(lambda: [m for m in lines(cfg["PUSH_SINK_FILE"]) if uid in m["to"]] or None)
    wait_for(lambda: len([m for m in lines(cfg["PUSH_SINK_FILE"]) if uid in m["to"]]) == 2)
    pushes = [m for m in lines(cfg["PUSH_SINK_FILE"]) if uid in m["to"]]
    assert {m["platform"] for m in pushes} == {"android", "ios"}
    assert all(m["title"] == "领券成功" and "洗车券" in m["body"] for m in pushes)
    with entrypoint_hook(notify, "put_preferences") as put:
        put(member(uid), {"muted_categories": ["benefits"]})
    publish(cfg, "benefits", "coupon_redeemed", {
        "coupon_id": "c1", "campaign_id": "k1", "user_id": uid, "merchant_id": "mer1", "title": "洗车券",
        "face_value_cents": 1500, "redeemed_at": "2026-06-01T04:00:00.000Z"})
    wait_for(lambda: db.notifications.find_one({"user_id": uid, "template": "coupon_redeemed"}))
    assert db.dispatches.count_documents({"user_id": uid, "template": "coupon_redeemed"}) == 0


def test_inbox_newest_first_with_cursor_unread_and_read(notify, cfg, db):
    uid, other = new_user(), new_user()
    for i in range(5):
        publish(cfg, "jobs", "application_status_changed", {
            "application_id": "a%d" % i, "job_id": "j%d" % i, "job_title": "岗位%d" % i, "employer_id": "e1",
            "user_id": uid, "status": "viewed"})
        wait_for(lambda: len(inbox_of(db, uid)) == i + 1)  # one at a time: a known order
    publish(cfg, "jobs", "application_status_changed", {
        "application_id": "b", "job_id": "j", "job_title": "别人的", "employer_id": "e1", "user_id": other,
        "status": "viewed"})
    theirs = wait_for(lambda: db.notifications.find_one({"user_id": other}))
    with entrypoint_hook(notify, "list_notifications") as listing:
        first = listing(member(uid), {"limit": 2})
        assert [i["title"] for i in first["items"]] == ["求职进展"] * 2
        assert ["岗位4" in first["items"][0]["body"], "岗位3" in first["items"][1]["body"]] == [True, True]
        second = listing(member(uid), {"limit": 2, "cursor": first["next_cursor"]})
        third = listing(member(uid), {"limit": 2, "cursor": second["next_cursor"]})
        assert "岗位0" in third["items"][0]["body"] and third["next_cursor"] is None
        ids = [i["id"] for i in first["items"] + second["items"] + third["items"]]
        assert len(set(ids)) == 5
        assert set(first["items"][0]) == {"id", "category", "title", "body", "created_at", "read"}
        with pytest.raises(ValidationFailed):
            listing(member(uid), {"cursor": "garbage"})
    with entrypoint_hook(notify, "mark_read") as read:
        assert read(member(uid), ids[1])["read"] is True
        with pytest.raises(NotFound):
            read(member(uid), theirs["_id"])  # someone else's entry: as if it did not exist
        with pytest.raises(NotFound):
            read(member(uid), "../../etc")
    with entrypoint_hook(notify, "list_notifications") as listing:
        unread = listing(member(uid), {"unread": True, "limit": 10})
        assert [i["id"] for i in unread["items"]] == [i for i in ids if i != ids[1]]
        assert all(i["read"] is False for i in unread["items"])
    assert db.notifications.find_one({"_id": theirs["_id"]})["read"] is False

"""Announcements on the real broker and store: audience × scope from the projection, batched fan-out with progress,
push to devices, and a crash in the middle that resumes without sending anything twice."""
import collections

import eventlet
import pytest
from nameko.testing.services import entrypoint_hook

from services.notify import fanout
from tests.service.notify_support import notify_container, lines, notify_config, wait_for
from unionhub_kit.errors import Forbidden, ValidationFailed

ADMIN = {"sub": "acc_admin", "role": "union_admin", "scope": "5101"}
BATCH = 200


def seed(db, n):
    """``n`` projected members (as the membership handlers write them) spread over regions, groups and statuses;
    returns the user ids an announcement to Chengdu couriers in scope 5101 must reach."""
    docs, expected = [], []
    regions = ["510104", "510105", "510107", "510703"]  # three Chengdu counties and one in Mianyang
    groups = ["courier", "courier", "delivery_rider"]
    for i in range(n):
        region = regions[i % len(regions)]
        doc = {"_id": "usr_%06d" % i, "member_id": "mem_%06d" % i, "union_id": "g%s" % region,
               "union_code": region + "0001", "region_code": region, "occupation_group": groups[i % len(groups)],
               "status": "left" if i % 17 == 0 else "active"}
        docs.append(doc)
        if region.startswith("5101") and doc["occupation_group"] == "courier" and doc["status"] == "active":
            expected.append(doc["_id"])
    db.members.insert_many(docs)
    return expected


AUDIENCE = {"title": "端午慰问", "body": "工会将于端午节为快递员发放慰问品。",
            "audience": {"region_codes": ["510100"], "occupation_groups": ["courier"]}}


def start(container_factory, cfg):
    c = notify_container(container_factory, cfg)
    c.start()
    return c


def announce(container, body=AUDIENCE, actor=ADMIN):
    with entrypoint_hook(container, "create_announcement") as create:
        return create(actor, body)


def progress(container, aid, actor=ADMIN):
    with entrypoint_hook(container, "get_announcement") as get:
        return get(actor, aid)


def assert_each_once(db, aid, expected):
    per_user = collections.Counter(d["user_id"] for d in db.notifications.find({"announcement_id": aid}))
    assert per_user == {u: 1 for u in expected}


def test_announcement_reaches_exactly_its_audience_in_batches(container_factory, config, tmp_path, db_of):
    cfg = notify_config(config, tmp_path, NOTIFY_FANOUT_BATCH=BATCH)
    notify = start(container_factory, cfg)
    db = db_of("notify")
    expected = seed(db, 1500)
    with entrypoint_hook(notify, "register_device") as register:
        register({"sub": expected[0], "role": "member"}, {"platform": "android", "token": "fcm-announce-01"})
    out = announce(notify)
    assert out["status"] == "pending"
    done = wait_for(lambda: (lambda p: p["status"] == "done" and p)(progress(notify, out["id"])))
    assert done["recipients"] == done["delivered"] == len(expected) > BATCH * 2
    assert_each_once(db, out["id"], expected)
    entry = db.notifications.find_one({"announcement_id": out["id"]})
    assert entry["category"] == "announcements" and entry["title"] == "端午慰问" and entry["read"] is False
    push = wait_for(lambda: [m for m in lines(cfg["PUSH_SINK_FILE"]) if m["to"] == "fcm-announce-01"])
    assert push[0]["body"] == "端午慰问"
    # another admin's scope does not see it; the province does
    with pytest.raises(Exception) as exc:
        progress(notify, out["id"], {"sub": "x", "role": "union_admin", "scope": "5107"})
    assert getattr(exc.value, "code", None) == "NOT_FOUND"
    assert progress(notify, out["id"], {"sub": "y", "role": "union_admin", "scope": "51"})["delivered"] == len(expected)


def test_bad_audiences(container_factory, config, tmp_path, db_of):
    notify = start(container_factory, notify_config(config, tmp_path))
    db = db_of("notify")
    db.members.insert_one({"_id": "usr_far", "union_id": "g_far", "union_code": "5107030001", "region_code": "510703",
                           "occupation_group": "courier", "status": "active"})
    with pytest.raises(Forbidden) as exc:
        announce(notify, dict(AUDIENCE, audience={"region_codes": ["51"]}))  # the province, from a 5101 admin
    assert exc.value.code == "OUT_OF_SCOPE"
    with pytest.raises(Forbidden):
        announce(notify, dict(AUDIENCE, audience={"union_ids": ["g_far"]}))  # a Mianyang union
    with pytest.raises(ValidationFailed) as exc:
        announce(notify, dict(AUDIENCE, audience={"region_codes": [], "occupation_groups": []}))
    assert "audience._schema" in exc.value.errors
    with pytest.raises(Forbidden):
        announce(notify, actor={"sub": "m", "role": "member"})
    assert db.announcements.count_documents({}) == 0


def test_fan_out_failing_between_a_batch_and_its_checkpoint_resumes_without_duplicates(
        container_factory, config, tmp_path, db_of, monkeypatch):
    cfg = notify_config(config, tmp_path, NOTIFY_FANOUT_BATCH=BATCH)
    db = db_of("notify")
    expected = seed(db, 1200)
    calls = []

    def fail_once(aid, user_ids):
        calls.append(list(user_ids))
        if len(calls) == 2:
            raise RuntimeError("the store went away")  # batch 2 is written, its checkpoint is not
    monkeypatch.setattr(fanout, "before_checkpoint", fail_once)
    notify = start(container_factory, cfg)
    out = announce(notify)
    done = wait_for(lambda: (lambda p: p["status"] == "done" and p)(progress(notify, out["id"])))
    written = [u for c in calls for u in c]
    assert len(calls) == 3 and sorted(written) == sorted(expected)  # the resumed run wrote only what was missing
    assert done["delivered"] == done["recipients"] == len(expected)  # batch 2 counted although not checkpointed
    assert_each_once(db, out["id"], expected)


def test_process_dying_mid_announcement_is_resumed_by_another_after_its_lease(
        container_factory, config, tmp_path, db_of, monkeypatch):
    cfg = notify_config(config, tmp_path, NOTIFY_FANOUT_BATCH=BATCH, NOTIFY_LEASE_SECONDS=1)
    db = db_of("notify")
    expected = seed(db, 1500)
    stuck = eventlet.event.Event()
    calls = []

    def die_on_second(aid, user_ids):
        calls.append(list(user_ids))
        if len(calls) == 2:
            stuck.wait()  # the process hangs here until it is killed: batch 2 written, no checkpoint
    monkeypatch.setattr(fanout, "before_checkpoint", die_on_second)
    first = start(container_factory, cfg)
    out = announce(first)
    wait_for(lambda: len(calls) == 2)
    mid = db.announcements.find_one({"_id": out["id"]})
    assert mid["status"] == "running" and mid["recipients"] == len(expected) and mid["delivered"] == BATCH
    assert db.notifications.count_documents({"announcement_id": out["id"]}) == 2 * BATCH
    first.kill()  # dies holding the lease

    monkeypatch.setattr(fanout, "before_checkpoint", lambda aid, user_ids: calls.append(list(user_ids)))
    second = start(container_factory, cfg)
    done = wait_for(lambda: (lambda p: p["status"] == "done" and p)(progress(second, out["id"])))
    assert len(expected) > 3 * BATCH
    resumed = [u for c in calls[2:] for u in c]
    assert sorted(resumed) == sorted(set(expected) - {u for c in calls[:2] for u in c})  # only the missing ones
    assert done["delivered"] == done["recipients"] == len(expected)
    assert_each_once(db, out["id"], expected)

"""Announcements on the real broker and store: written once and in every audience member's inbox at once (fan-out on
read, merged with the member's own entries, read state per member), audience × scope from the projection, pushes
to the members' devices as provider multicasts, and a crash in the middle that resumes without pushing twice."""
import collections

import eventlet
import pytest
from nameko.testing.services import entrypoint_hook

from services.notify import domain, fanout, store
from support.stack import wait_for
from tests.service.notify_support import lines, notify_config, notify_container
from unionhub_kit import clock
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


def inbox(container, user_id, **query):
    with entrypoint_hook(container, "list_notifications") as list_:
        return list_({"sub": user_id, "role": "member"}, query)


def give_devices(db, user_ids):
    db.devices.insert_many([{"_id": "dev_%s" % u, "user_id": u, "platform": "android", "token": "tok-%s" % u,
                             "created_at": clock.now()} for u in user_ids])


def pushed_tokens(cfg):
    """Every device token the push provider was handed, with how many times (multicast lines: ``to`` a list)."""
    return collections.Counter(t for m in lines(cfg["PUSH_SINK_FILE"]) if isinstance(m["to"], list) for t in m["to"])


def assert_pushed_once(cfg, users):
    want = {"tok-%s" % u: 1 for u in users}
    try:  # the provider calls come after the fan-out's batches, paced (NOTIFY_FANOUT_DUTY) and rate limited: on a
        # machine running the whole suite they took longer than 20 s in two fresh-clone runs
        wait_for(lambda: pushed_tokens(cfg) == want, 60)
    except AssertionError:
        pass
    got = pushed_tokens(cfg)
    missing, twice = sorted(set(want) - set(got)), sorted(t for t, n in got.items() if n > 1)
    calls = collections.Counter(m.get("delivery_id") for m in lines(cfg["PUSH_SINK_FILE"]) if isinstance(m["to"], list))
    assert got == want, "%d pushed, %d missing (%s), %d twice (%s), %d unexpected; %d provider calls, %d of them " \
        "repeats of a dispatch" % (len(got), len(missing), missing[:3], len(twice), twice[:3],
                                   len(set(got) - set(want)), sum(calls.values()), sum(calls.values()) - len(calls))


def test_announcement_is_in_every_audience_inbox_at_once_and_pushed_in_multicasts(
        container_factory, config, tmp_path, db_of):
    cfg = notify_config(config, tmp_path, NOTIFY_FANOUT_BATCH=BATCH, PUSH_MULTICAST_MAX=7)
    db = db_of("notify")
    notify = start(container_factory, cfg)  # first: its indexes are made on empty collections (fast under load)
    expected = seed(db, 1500)
    outsiders = sorted({d["_id"] for d in db.members.find({})} - set(expected))
    give_devices(db, expected[:40] + outsiders[:5])
    db.notifications.insert_one(domain.notification_doc(expected[0], "coupon_claimed", {"title": "mine", "body": "b"},
                                                        "own", clock.now()))
    out = announce(notify)
    assert out["status"] == "pending"
    # in the inbox at once: nothing was written per member
    first = inbox(notify, expected[0])["items"]
    assert [i["title"] for i in first] == ["端午慰问", "mine"] and first[0]["id"] == out["id"]
    assert first[0]["category"] == "announcements" and first[0]["read"] is False
    assert inbox(notify, expected[-1])["items"][0]["id"] == out["id"]
    assert not [i for u in outsiders[:20] for i in inbox(notify, u)["items"]]
    done = wait_for(lambda: (lambda p: p["status"] == "done" and p)(progress(notify, out["id"])))
    assert done["recipients"] == done["delivered"] == len(expected) > BATCH * 2
    assert db.notifications.count_documents({}) == 1
    # pushes: the audience's devices, each once, at most 7 tokens a provider call
    assert_pushed_once(cfg, expected[:40])
    calls = [m for m in lines(cfg["PUSH_SINK_FILE"]) if isinstance(m["to"], list)]
    assert max(len(m["to"]) for m in calls) == 7 and calls[0]["body"] == "端午慰问"
    wait_for(lambda: progress(notify, out["id"])["pushes"] == 40)
    # read state is the member's own
    with entrypoint_hook(notify, "mark_read") as mark:
        assert mark({"sub": expected[0], "role": "member"}, out["id"])["read"] is True
        with pytest.raises(Exception) as exc:
            mark({"sub": outsiders[0], "role": "member"}, out["id"])
        assert getattr(exc.value, "code", None) == "NOT_FOUND"
    assert inbox(notify, expected[0])["items"][0]["read"] is True
    assert [i["title"] for i in inbox(notify, expected[0], unread=True)["items"]] == ["mine"]
    assert [i["title"] for i in inbox(notify, expected[0], unread=False)["items"]] == ["端午慰问"]
    assert inbox(notify, expected[1])["items"][0]["read"] is False
    # another admin's scope does not see it; the province does
    with pytest.raises(Exception) as exc:
        progress(notify, out["id"], {"sub": "x", "role": "union_admin", "scope": "5107"})
    assert getattr(exc.value, "code", None) == "NOT_FOUND"
    assert progress(notify, out["id"], {"sub": "y", "role": "union_admin", "scope": "51"})["delivered"] == len(expected)


def test_inbox_pages_through_entries_and_announcements_with_one_cursor(container_factory, config, tmp_path, db_of):
    notify = start(container_factory, notify_config(config, tmp_path))
    db = db_of("notify")
    user = seed(db, 8)[0]
    titles = []
    for i in range(5):
        db.notifications.insert_one(domain.notification_doc(user, "coupon_claimed", {"title": "own %d" % i,
                                                                                     "body": "b"}, "o%d" % i,
                                                            clock.now()))
        titles.append("own %d" % i)
        announce(notify, dict(AUDIENCE, title="ann %d" % i))
        titles.append("ann %d" % i)
    seen, cursor = [], None
    while True:
        page = inbox(notify, user, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [i["title"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == titles[::-1]


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
    notify = start(container_factory, cfg)
    expected = seed(db, 1200)
    give_devices(db, expected)
    calls = []

    def fail_once(aid, user_ids):
        calls.append(list(user_ids))
        if len(calls) == 2:
            raise RuntimeError("the store went away")  # batch 2 is written, its checkpoint is not
    monkeypatch.setattr(fanout, "before_checkpoint", fail_once)
    out = announce(notify)
    done = wait_for(lambda: (lambda p: p["status"] == "done" and p)(progress(notify, out["id"])))
    assert len(calls) == 4 and calls[1] == calls[2]  # batch 2 again after the failure
    assert done["delivered"] == done["recipients"] == len(expected)
    assert_pushed_once(cfg, expected)


@pytest.mark.parametrize("audience", [AUDIENCE["audience"], {"occupation_groups": ["courier"]}],
                         ids=["by_region_index", "by_id_index"])  # the second names no indexed field: hint("_id_")
def test_process_dying_mid_announcement_is_resumed_by_another_after_its_lease(
        container_factory, config, tmp_path, db_of, monkeypatch, audience):
    """The audience streams in ``_id`` order and the checkpoint names the last member counted: the worker that takes
    over continues after that member (not after a count of members in an order a restart may change), so every
    member is counted once and every device gets the push once."""
    cfg = notify_config(config, tmp_path, NOTIFY_FANOUT_BATCH=BATCH, NOTIFY_LEASE_SECONDS=1)
    db = db_of("notify")
    first = start(container_factory, cfg)
    expected = seed(db, 1500)
    give_devices(db, expected)
    stuck = eventlet.event.Event()
    calls = []

    def die_on_second(aid, user_ids):
        calls.append(list(user_ids))
        if len(calls) == 2:
            stuck.wait()  # the process hangs here until it is killed: batch 2 written, no checkpoint
    monkeypatch.setattr(fanout, "before_checkpoint", die_on_second)
    out = announce(first, dict(AUDIENCE, audience=audience))  # both: the couriers of the admin's Chengdu (5101)
    wait_for(lambda: len(calls) == 2)
    mid = db.announcements.find_one({"_id": out["id"]})
    assert mid["status"] == "running" and mid["recipients"] == BATCH and mid["scanned"] == BATCH
    assert mid["last_id"] == calls[0][-1]  # the checkpoint names the last member it counted
    # the kill is for the fan-out: the messages this process queued (batches 1 and 2) are sent and settled first (a
    # kill between a provider call and its settle repeats that call under the same Idempotency-Key; not this test's)
    wait_for(lambda: db.dispatches.count_documents({}) and db.dispatches.count_documents(
        {"status": {"$ne": "delivered"}}) == 0)
    first.kill()  # dies holding the lease

    monkeypatch.setattr(fanout, "before_checkpoint", lambda aid, user_ids: calls.append(list(user_ids)))
    second = start(container_factory, cfg)
    done = wait_for(lambda: (lambda p: p["status"] == "done" and p)(progress(second, out["id"])))
    assert len(expected) > 3 * BATCH and calls[2] == calls[1]  # the batch after the checkpoint, again
    assert calls[2][0] > mid["last_id"]
    # counted in _id order, each member once: the first process's checkpointed batch, then the second's batches
    assert [u for batch in [calls[0]] + calls[2:] for u in batch] == sorted(expected)
    assert done["delivered"] == done["recipients"] == len(expected)
    assert db.announcements.find_one({"_id": out["id"]})["last_id"] == max(expected)
    assert_pushed_once(cfg, expected)


def test_announcement_checkpointed_by_a_count_only_finishes_in_natural_order(container_factory, config, tmp_path,
                                                                             db_of, monkeypatch):
    """An announcement in flight from before the checkpoint named a member (``scanned`` and ``batches``, no
    ``last_id``; counted in natural order) finishes in that order after ``skip=scanned``, and stays that way."""
    cfg = notify_config(config, tmp_path, NOTIFY_FANOUT_BATCH=BATCH, NOTIFY_LEASE_SECONDS=1)
    db = db_of("notify")
    expected = seed(db, 1500)
    give_devices(db, expected)
    doc = domain.announcement_doc(ADMIN, AUDIENCE, clock.now())
    # the order the older worker counted in: the store's answer to the plain query, which changes with the indexes
    # there are (this store walks the region_code index once it exists: grouped by region, not insertion order)
    store.ensure_indexes(db)
    natural = [d["_id"] for d in db.members.find(domain.audience_filter(doc["audience"], doc["scope"]), {"_id": 1})]
    assert sorted(natural) == sorted(expected)
    doc.update(status="running", started_at=clock.now(), scanned=BATCH, batches=1, recipients=BATCH, delivered=BATCH,
               lease_owner="notify-old", lease_until=clock.now())  # an older worker's, its lease run out
    db.announcements.insert_one(doc)
    calls = []
    monkeypatch.setattr(fanout, "before_checkpoint", lambda aid, user_ids: calls.append(list(user_ids)))
    notify = start(container_factory, cfg)
    done = wait_for(lambda: (lambda p: p["status"] == "done" and p)(progress(notify, doc["_id"])))
    assert [u for batch in calls for u in batch] == natural[BATCH:]
    assert done["delivered"] == done["recipients"] == len(expected)
    assert "last_id" not in db.announcements.find_one({"_id": doc["_id"]})
    assert_pushed_once(cfg, natural[BATCH:])  # the first batch was the older worker's


def test_inbox_keeps_recent_announcements_in_memory_and_reads_the_store_for_the_rest(container_factory, config,
                                                                                     tmp_path, db_of):
    """A process answers inbox pages from the announcements it holds in memory (the last RECENT_DAYS), sees one
    written by another process at its next page, and pages past its floor from the store: the same pages as the
    store alone gives."""
    from datetime import timedelta

    from services.notify import inbox as inbox_mod

    notify = start(container_factory, notify_config(config, tmp_path))
    db = db_of("notify")
    user = seed(db, 8)[0]
    now = clock.now()

    def written_elsewhere(title, at):
        doc = domain.announcement_doc(ADMIN, dict(AUDIENCE, title=title), at)
        doc.update(status="done")
        db.announcements.insert_one(doc)
    written_elsewhere("old", now - timedelta(days=inbox_mod.RECENT_DAYS + 30))  # below what a process holds
    announce(notify, dict(AUDIENCE, title="first"))
    assert [i["title"] for i in inbox(notify, user)["items"]] == ["first", "old"]  # loads the process's memory
    # the first pages of a process, all at once: each waits for the one load of its memory, none sees half of it
    fresh = inbox_mod.Recent()
    pages = list(eventlet.GreenPool(8).imap(
        lambda _: [i["title"] for i in inbox_mod.page(db, user, None, None, 20, fresh)["items"]], range(8)))
    assert pages == [["first", "old"]] * 8
    written_elsewhere("other process", clock.now())  # by another process: in this one's next page
    got, cursor = [], None
    while True:
        page = inbox(notify, user, limit=1, **({"cursor": cursor} if cursor else {}))
        got += [i["title"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert got == ["other process", "first", "old"]
    # the same pages from the store alone
    alone = inbox_mod.page(db, user, None, None, 10)
    assert [i["title"] for i in alone["items"]] == got
    # a fresh process's memory: loaded with the recent ones only, knows there are older ones
    recent = inbox_mod.Recent()
    recent.refresh(db)
    assert recent.older and {d["title"] for d in recent.docs.values()} == {"first", "other process"}


def test_a_region_audience_has_the_region_and_id_index_and_the_older_one_goes(db_of):
    """``{region_code, _id}``: a region's audience in ``_id`` order from one index (MongoDB streams it); the
    single-field index an earlier start made is dropped (the compound one answers everything it did)."""
    db = db_of("notify")
    db.members.create_index([("region_code", 1)])  # as an earlier version made it
    store.ensure_indexes(db)
    keys = {name: spec["key"] for name, spec in db.members.index_information().items()}
    assert keys.get("region_code_1__id_1") == [("region_code", 1), ("_id", 1)]
    assert "region_code_1" not in keys
    store.ensure_indexes(db)  # a second start (or another process) finds it done
    db.members.insert_many([{"_id": "u%d" % k, "status": "active", "union_code": "51010400001",
                             "region_code": ("510104", "510105")[k % 2]} for k in (5, 2, 9, 4, 7)])
    query = domain.audience_filter({"region_codes": ["5101"]}, "51")
    assert [d["_id"] for d in store.audience_stream(db, query, 2)] == ["u2", "u4", "u5", "u7", "u9"]
    assert [d["_id"] for d in store.audience_stream(db, query, 2, after="u4")] == ["u5", "u7", "u9"]

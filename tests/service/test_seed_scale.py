"""``make seed-scale`` (deploy/seed_scale.py) on the real store, small: membership, benefits' and notify's data as
their services would have written it, the counters exact, an interrupted load resumed without duplicates."""
import collections
import datetime

import pytest

from deploy import seed_scale
from services.membership import store as membership_store
from services.notify import inbox
from unionhub_kit import clock, population

USERS, BATCH = 900, 300
ARGS = ["--users", str(USERS), "--batch", str(BATCH), "--union-share", "0.01", "--coupons-per-user", "2",
        "--inbox-per-user", "3", "--only", "membership,benefits,notify"]


@pytest.fixture
def env(monkeypatch, store_uri, db_prefix, db_of):
    monkeypatch.setenv("MONGO_URI", store_uri)
    monkeypatch.setenv("UNIONHUB_DB_PREFIX", db_prefix)
    return db_of


def counts(db_of):
    return {(s, c): db_of(s)[c].count_documents({}) for s, c in (
        ("membership", "users"), ("membership", "members"), ("membership", "unions"), ("benefits", "members"),
        ("benefits", "coupons"), ("notify", "members"), ("notify", "notifications"), ("notify", "announcements"))}


def test_seed_scale_loads_resumes_and_counts(env):
    db_of = env
    assert seed_scale.main(ARGS) == 0
    first = counts(db_of)
    members = db_of("membership").members
    people = [p for b in range(USERS // BATCH) for p in population.batch(population.Province(13, 0.01), b, BATCH,
                                                                          USERS)]
    with_member = [p for p in people if p["member"]]
    assert first[("membership", "users")] == USERS and first[("membership", "members")] == len(with_member)
    status = collections.Counter(p["member"]["status"] for p in with_member)
    assert {s: members.count_documents({"status": s}) for s in status} == dict(status)
    assert first[("benefits", "members")] == first[("notify", "members")] == len(with_member) - status["pending"]
    assert first[("benefits", "coupons")] > 0 and first[("notify", "notifications")] > 0
    # the counters equal a count of the member documents
    for status_ in ("active", "pending", "left"):
        by_pref = collections.Counter(m["prefecture_code"] for m in members.find({"status": status_}))
        got = dict(membership_store.count_members(db_of("membership"), "51", status_, "prefecture"))
        assert got == dict(by_pref)
    # a membership process starting on the loaded store serves at once: it does not count the members again
    mdb = db_of("membership")
    some = mdb.member_counts.find_one({})
    mdb.member_counts.update_one({"_id": some["_id"]}, {"$inc": {"n": 1000}})
    membership_store.ensure_member_counts(mdb)
    assert mdb.member_counts.find_one({"_id": some["_id"]})["n"] == some["n"] + 1000
    # a start killed while it built them left the mark "building": while its builder renews it, nobody else
    # builds; once it is stale, the next start builds them again (the corrupted counter comes out right)
    mdb.counters.update_one({"_id": "member-counts"}, {"$set": {"state": "building", "at": clock.now()}})
    membership_store.ensure_member_counts(mdb)
    assert mdb.member_counts.find_one({"_id": some["_id"]})["n"] == some["n"] + 1000
    stale = clock.now() - membership_store.COUNTS_LEASE - datetime.timedelta(seconds=1)
    mdb.counters.update_one({"_id": "member-counts"}, {"$set": {"at": stale}})
    membership_store.ensure_member_counts(mdb)
    assert mdb.member_counts.find_one({"_id": some["_id"]})["n"] == some["n"]
    assert mdb.counters.find_one({"_id": "member-counts"})["state"] == "built"
    # a seeded member's inbox: their own entries and the year's announcements, newest first
    active = next(p for p in with_member if p["member"]["status"] == "active")
    page = inbox.page(db_of("notify"), active["user_id"], None, None, 20)
    assert any(i["category"] == "announcements" for i in page["items"])
    ids = [i["id"] for i in page["items"]]
    assert ids == sorted(ids, reverse=True)

    # run again: everything is done, nothing is added
    assert seed_scale.main(ARGS) == 0
    assert counts(db_of) == first
    # an interrupted load: the last batch half written and not checkpointed -> written again, nothing twice
    for service in ("membership", "benefits", "notify"):
        db_of(service).seed_scale.update_many({}, {"$pull": {"batches": USERS // BATCH - 1}})
    last = [p["user_id"] for p in people[-BATCH:]]
    db_of("membership").users.delete_many({"_id": {"$in": last[: BATCH // 2]}})
    db_of("notify").members.delete_many({"_id": {"$in": last[: BATCH // 2]}})
    assert seed_scale.main(ARGS) == 0
    assert counts(db_of) == first

"""Login's store operations on the real store: they find one phone's records by an index, whatever the number of
accounts (the login slowdown was two collection scans per login), and the login-code limits keep their meaning."""
from datetime import datetime, timedelta, timezone

import pytest

from services.membership import domain, store

ACCOUNTS = 300


@pytest.fixture
def db(db_of):
    d = db_of("membership")
    store.ensure_indexes(d)
    return d


def winning_stage(db, cmd):
    plan = db.command({"explain": cmd, "verbosity": "queryPlanner"})["queryPlanner"]["winningPlan"]
    while plan.get("inputStage") and plan["stage"] not in ("IXSCAN", "COLLSCAN"):
        plan = plan["inputStage"]
    return plan["stage"], plan.get("indexName")


def test_login_lookups_use_an_index(db):
    db.users.insert_many([{"_id": "usr_%d" % i, "phone_hash": "ph%d" % i} for i in range(ACCOUNTS)])
    db.users.insert_many([{"_id": "usr_erased_%d" % i} for i in range(3)])  # erased: no phone, not in the index
    db.members.insert_many([{"_id": "mbr_%d" % i, "user_id": "usr_%d" % i, "live_user": "usr_%d" % i,
                             "live_id": "id%d" % i} for i in range(ACCOUNTS)])
    assert winning_stage(db, {"find": "users", "filter": {"phone_hash": "ph7"}}) == ("IXSCAN", "phone_hash_1")
    assert winning_stage(db, {"findAndModify": "users", "query": {"phone_hash": "ph7"},
                              "update": {"$set": {"last_login_at": 1}}}) == ("IXSCAN", "phone_hash_1")
    assert winning_stage(db, {"find": "members", "filter": {"live_user": "usr_7"}}) == ("IXSCAN", "live_user_1")
    user = store.user_for_phone(db, "ph7", {"_id": "usr_new"})
    assert user["_id"] == "usr_7" and user["last_login_at"]
    assert store.user_for_phone(db, "ph-new", {"_id": "usr_new"})["_id"] == "usr_new"
    assert db.users.count_documents({}) == ACCOUNTS + 4


def test_old_partial_indexes_are_replaced_and_still_unique(db_of):
    d = db_of("membership")
    d.users.create_index("phone_hash", unique=True, partialFilterExpression={"phone_hash": {"$exists": True}})
    store.ensure_indexes(d)
    info = d.users.index_information()["phone_hash_1"]
    assert info.get("sparse") and info.get("unique") and "partialFilterExpression" not in info
    d.users.insert_many([{"_id": "a"}, {"_id": "b"}, {"_id": "c", "phone_hash": "x"}])
    with pytest.raises(Exception):
        d.users.insert_one({"_id": "d", "phone_hash": "x"})
    store.ensure_indexes(d)  # a second start changes nothing


def test_login_code_limits_in_the_store(db):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    assert store.claim_otp(db, "k", "c1", now)
    sent = db.otps.find_one({"_id": "k"})["sent"]
    assert len(sent) == domain.OTP_PER_HOUR and sent[-1] == now and set(sent[:-1]) == {store.NEVER}
    assert not store.claim_otp(db, "k", "c2", now + timedelta(seconds=59))  # one a minute
    for i in range(1, domain.OTP_PER_HOUR):
        assert store.claim_otp(db, "k", "c", now + timedelta(minutes=i * 2))
    assert not store.claim_otp(db, "k", "c", now + timedelta(minutes=30))  # five within the hour
    assert store.claim_otp(db, "k", "c", now + timedelta(minutes=60, seconds=1))  # the first is an hour old
    # a send released (the SMS failed) does not count
    assert store.claim_otp(db, "r", "c", now)
    store.release_otp(db, "r", "c", now)
    assert db.otps.find_one({"_id": "r"})["sent"] == [store.NEVER] * domain.OTP_PER_HOUR
    assert store.claim_otp(db, "r", "c", now + timedelta(seconds=1))


def test_a_record_written_before_the_padding_is_judged_by_the_same_rule(db):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    db.otps.insert_many([
        {"_id": "short", "sent": [now - timedelta(minutes=20), now - timedelta(minutes=10)], "last_sent": now},
        {"_id": "full", "sent": [now - timedelta(minutes=m) for m in (50, 40, 30, 20, 10)], "last_sent": now},
        {"_id": "recent", "sent": [now - timedelta(seconds=30)], "last_sent": now}])
    assert store.claim_otp(db, "short", "c", now)  # two in the hour: allowed
    assert not store.claim_otp(db, "full", "c", now)  # five in the hour
    assert not store.claim_otp(db, "recent", "c", now)  # one 30 s ago
    assert len(db.otps.find_one({"_id": "short"})["sent"]) == domain.OTP_PER_HOUR


def test_codes_per_client_address_are_counted_per_minute_over_the_hour(db):
    """At most ``per_hour`` codes from one address in any hour (a send counts for 59-60 minutes); a refused or
    released code does not count; a Retry-After says when the oldest minute leaves the hour; the work of a request
    is one minute's document and a read of at most 60, however many codes the address was sent."""
    start = datetime(2026, 12, 1, 10, 0, 30, tzinfo=timezone.utc)
    for m in (0, 10, 20):
        assert store.claim_client_slot(db, "addr", start + timedelta(minutes=m), 3) is None
    wait = store.claim_client_slot(db, "addr", start + timedelta(minutes=30), 3)
    assert wait == 3600 - 30 * 60 - 30  # the 10:00 minute leaves the hour at 11:00
    assert store.claim_client_slot(db, "other", start + timedelta(minutes=30), 3) is None  # per address
    assert store.claim_client_slot(db, "addr", start + timedelta(minutes=59, seconds=29), 3) is not None
    assert store.claim_client_slot(db, "addr", start + timedelta(minutes=59, seconds=30), 3) is None  # 10:00 gone
    assert sum(d["n"] for d in db.otp_clients.find({"_id": {"$regex": "^addr"}})) == 4  # refusals taken back
    # released: the SMS was not sent
    at = start + timedelta(minutes=61)
    store.release_client_slot(db, "addr", start + timedelta(minutes=59, seconds=30))
    assert store.claim_client_slot(db, "addr", at, 3) is None
    # a busy address (a raised limit): each minute is one small document
    for k in range(500):
        assert store.claim_client_slot(db, "busy", start + timedelta(seconds=k), 10 ** 6) is None
    docs = list(db.otp_clients.find({"_id": {"$regex": "^busy"}}))
    assert len(docs) == 9 and sum(d["n"] for d in docs) == 500
    assert all(len(d) == 3 for d in docs)  # _id, n, last_sent: no list of send times
    # old records go with the purge like every login-code record
    store.purge_stale_otps(db, start + timedelta(hours=3))
    assert db.otp_clients.count_documents({}) == 0

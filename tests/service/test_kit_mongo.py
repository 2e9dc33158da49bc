"""unionhub_kit.mongo helpers against the real store."""
import eventlet

from unionhub_kit.mongo import upsert_returning


def test_racing_first_upserts_each_get_the_document(db_of):
    """Eight first-ever increments of one counter at once: each answer is a document, the numbers are distinct
    (find_one_and_update alone answered None to a loser of this race on the embedded store: a TypeError in join)."""
    coll = db_of("kit_mongo").counters
    got = []

    def bump():
        got.append(upsert_returning(coll, {"_id": "card-2026"}, {"$inc": {"seq": 1}})["seq"])
    for _round in range(5):
        coll.delete_many({})
        got.clear()
        pool = eventlet.GreenPool(8)
        for _ in range(8):
            pool.spawn(bump)
        pool.waitall()
        final = coll.find_one({"_id": "card-2026"})["seq"]
        assert len(got) == 8 and len(set(got)) == 8 and max(got) == final and final >= 8


def test_update_returning_answers_like_find_one_and_update(db_of):
    """By ``_id``, by another field, not matching, upserting, and inside a transaction (where it is exact)."""
    from unionhub_kit.mongo import transaction, update_returning
    coll = db_of("kit_mongo").things
    coll.create_index("k", unique=True, sparse=True)
    coll.insert_many([{"_id": 1, "k": "a", "n": 0}, {"_id": 2, "k": "b", "n": 0}])
    assert update_returning(coll, {"_id": 1, "n": 0}, {"$inc": {"n": 1}}) == {"_id": 1, "k": "a", "n": 1}
    assert update_returning(coll, {"_id": 1, "n": 0}, {"$inc": {"n": 1}}) is None  # no longer matches
    assert update_returning(coll, {"k": "b"}, {"$set": {"x": 1}}, {"x": 1}) == {"_id": 2, "x": 1}
    assert update_returning(coll, {"k": "zz"}, {"$set": {"x": 1}}) is None
    made = update_returning(coll, {"k": "c"}, {"$setOnInsert": {"n": 5}}, upsert=True)
    assert made["k"] == "c" and made["n"] == 5 and coll.count_documents({}) == 3
    assert update_returning(coll, {"k": "c"}, {"$setOnInsert": {"n": 9}}, upsert=True)["n"] == 5
    got = transaction(coll.database, lambda s: update_returning(coll, {"_id": 2}, {"$inc": {"n": 7}}, session=s))
    assert got["n"] == 7 and coll.find_one({"_id": 2})["n"] == 7


def test_after_commit_runs_once_after_the_commit_and_never_for_a_failed_transaction(db_of):
    """``after_commit`` hooks run once the transaction committed (its writes visible), once per key even when the
    body is run again (a retried transaction), and not at all when the transaction fails."""
    import pytest

    from unionhub_kit.mongo import after_commit, transaction
    coll = db_of("kit_mongo").hooked
    seen = []

    def body(session):
        coll.insert_one({"_id": len(seen) + 100}, session=session)
        after_commit(session, lambda: seen.append(coll.count_documents({})), key="k")
        after_commit(session, lambda: seen.append("again"), key="k")  # same key: replaces, runs once

    transaction(coll.database, body)
    assert seen == ["again"] and coll.count_documents({}) == 1

    def counted(session):
        coll.insert_one({"_id": 1}, session=session)
        after_commit(session, lambda: seen.append(coll.count_documents({})))
    transaction(coll.database, counted)
    assert seen == ["again", 2]  # ran after the commit: it saw its own transaction's insert

    def failing(session):
        coll.insert_one({"_id": 2}, session=session)
        after_commit(session, lambda: seen.append("failed"))
        raise ValueError("no")
    with pytest.raises(ValueError):
        transaction(coll.database, failing)
    assert seen == ["again", 2] and coll.count_documents({"_id": 2}) == 0


def test_run_once_many_applies_each_event_once_across_redeliveries_and_duplicates_in_a_batch(db_of):
    """The first attempt inserts the batch's records without reading them first; a redelivered event's record
    aborts it and the batch is sorted again: only the fresh events are handled, each once."""
    import uuid

    from unionhub_kit.consumer import run_once_many
    db = db_of("kitmany")
    envs = [{"id": uuid.uuid4().hex, "source": "membership", "type": "member_joined", "data": {"n": i}}
            for i in range(5)]
    handled = []

    def fn(session, fresh):
        db.handled.insert_many([{"n": e["data"]["n"]} for e in fresh], session=session)
        handled.append(sorted(e["data"]["n"] for e in fresh))

    run_once_many(db, envs[:3], fn, handler="h")
    run_once_many(db, [envs[1], envs[3], envs[3], envs[0], envs[4]], fn, handler="h")  # 0 and 1 redelivered
    run_once_many(db, envs[:2], fn, handler="h")  # all seen: nothing runs
    assert handled[0] == [0, 1, 2] and handled[-1] == [3, 4]
    assert sorted(d["n"] for d in db.handled.find()) == [0, 1, 2, 3, 4]
    assert db.processed_events.count_documents({}) == 5
    run_once_many(db, envs[:3], fn, handler="other")  # another handler of the same events applies them once too
    assert db.processed_events.count_documents({}) == 8


def test_outbox_indexes_one_serves_both_relays_and_the_older_two_are_dropped(db_of):
    """A store made before: the two older outbox indexes are dropped at start and the one index is there; the
    relay's own read and the orphans' read both use it."""
    import datetime

    import pymongo

    from unionhub_kit import outbox
    from unionhub_kit.mongo import ensure_kit_indexes
    db = db_of("kitidx")
    db.outbox.create_index([("published_at", pymongo.ASCENDING), ("lease_until", pymongo.ASCENDING)])
    db.outbox.create_index([("published_at", pymongo.ASCENDING), ("owner", pymongo.ASCENDING)])
    ensure_kit_indexes(db)
    ensure_kit_indexes(db)  # a second start (or replica) finds nothing left to drop
    names = set(db.outbox.index_information())
    assert names == {"_id_", "published_at_1_lease_until_1_owner_1"}
    own = db.outbox.find({"published_at": None, "lease_until": outbox.EPOCH, "owner": "p"}).explain()
    free = db.outbox.find({"published_at": None, "lease_until": {"$lt": datetime.datetime.now(datetime.timezone.utc)}})
    for plan in (own, free.explain()):
        assert "published_at_1_lease_until_1_owner_1" in str(plan["queryPlanner"]["winningPlan"])

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

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

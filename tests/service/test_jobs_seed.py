"""``python -m services.jobs.seed_scale`` on the real store, at a size a test can afford."""
import collections
import re

from services.jobs import domain, search, seed_scale
from unionhub_kit import clock, regions
from unionhub_kit.config import db_name


def test_seed_scale_loads_searchable_data(store_uri, db_prefix, mongo, monkeypatch, capsys):
    monkeypatch.setenv("MONGO_URI", store_uri)
    monkeypatch.setenv("UNIONHUB_DB_PREFIX", db_prefix)
    assert seed_scale.main(["--employers", "12", "--postings", "600", "--resumes", "40", "--batch", "250"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"postings +600 / 600", out) and "done in" in out
    db = mongo[db_name("jobs", {"DB_PREFIX": db_prefix})]
    assert (db.employers.count_documents({}), db.jobs.count_documents({}), db.resumes.count_documents({})) == \
        (12, 600, 40)
    jobs = list(db.jobs.find())
    open_ = [j for j in jobs if j["status"] == "open"]
    # shaped as the service writes postings: its search keys, its order key, known regions and categories
    for j in jobs:
        assert regions.is_known_code(j["region_code"]) and j["category"] in domain.CATEGORIES
        assert j["salary_min"] <= j["salary_max"] and j["headcount"] > 0
        assert j["order_key"].endswith(j["_id"])
        assert j["search_keys"] == (search.search_keys(j) if j["status"] == "open" else [])
    # the planner's counts are exact after a seed
    counts = collections.Counter(k for j in open_ for k in j["search_keys"])
    stats = {d["_id"]: d["n"] for d in db.search_stats.find()}
    assert stats == dict(counts)
    assert len({j["title"] for j in jobs}) > 20 and {j["category"] for j in jobs} >= set("12456")
    assert all("id_number" not in r for r in db.resumes.find())
    # seeding again needs --drop
    assert seed_scale.main(["--employers", "1", "--postings", "1", "--resumes", "0"]) == 1


def test_rekey_gives_old_postings_the_current_keys(store_uri, db_prefix, mongo, monkeypatch, capsys):
    """Postings written by a version with other search keys (here: before the salary-band keys) are missing from
    the searches that use the current keys until rekeyed; then the search equals brute force."""
    from services.jobs import rekey, store
    monkeypatch.setenv("MONGO_URI", store_uri)
    monkeypatch.setenv("UNIONHUB_DB_PREFIX", db_prefix)
    assert seed_scale.main(["--employers", "10", "--postings", "500", "--resumes", "0", "--batch", "250"]) == 0
    db = mongo[db_name("jobs", {"DB_PREFIX": db_prefix})]
    for j in db.jobs.find({"status": "open"}):  # as an earlier version wrote them
        db.jobs.update_one({"_id": j["_id"]}, {"$set": {"search_keys": [
            k for k in j["search_keys"] if not k.startswith("s:")]}})
    db.search_stats.delete_many({"_id": {"$regex": "^s:"}})
    now = clock.now()
    flt = {"tokens": [], "region_code": "5101", "salary_min": 8000}
    truth = sorted((j["order_key"] for j in db.jobs.find({"status": "open"})
                    if j["region_code"].startswith("5101") and j["salary_min"] >= 8000), reverse=True)[:20]
    assert truth, "the seed has well-paid postings in Chengdu"
    assert store.search_jobs(db, flt, 20, None, now)[0] == []  # old keys: not found
    assert rekey.main([]) == 0
    assert "rekeyed" in capsys.readouterr().out
    open_ = list(db.jobs.find({"status": "open"}))
    assert all(j["search_keys"] == search.search_keys(j) for j in open_)
    assert all(j["search_keys"] == [] for j in db.jobs.find({"status": "closed"}))
    counts = collections.Counter(k for j in open_ for k in j["search_keys"])
    assert {d["_id"]: d["n"] for d in db.search_stats.find()} == dict(counts)
    assert [j["order_key"] for j in store.search_jobs(db, flt, 20, None, now)[0]] == truth
    assert rekey.rekey(db, say=lambda *a: None)["rekeyed"] == 0  # a second run changes nothing

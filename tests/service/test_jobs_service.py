"""The jobs service on the real broker and store: postings, search, expiry, applications, fairs, alerts, events."""
import datetime

import eventlet
import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_hook

from services.jobs import search
from services.jobs.service import JobsService
from unionhub_kit import clock, events, ids
from unionhub_kit.errors import AppError
from support import builders
from support.stack import wait_for

ADMIN = {"sub": "admin-1", "role": "union_admin", "scope": "51", "merchant_id": None, "employer_id": None}


def employer_actor(employer_id, sub=None):
    return {"sub": sub or "acct-" + employer_id, "role": "employer", "scope": None, "merchant_id": None,
            "employer_id": employer_id}


def member(user_id):
    return {"sub": user_id, "role": "member", "scope": None, "merchant_id": None, "employer_id": None}


def later(days=30):
    return events.rfc3339(clock.now() + datetime.timedelta(days=days))


class Jobs:
    """Call the service's entrypoints by name: ``jobs.create_job(actor, body)``."""

    def __init__(self, container):
        self.container = container

    def __getattr__(self, name):
        def call(*args):
            with entrypoint_hook(self.container, name) as hook:
                return hook(*args)
        return call


@pytest.fixture
def jobs(container_factory, config):
    container = container_factory(JobsService, config)
    container.start()
    return Jobs(container)


@pytest.fixture
def db(db_of):
    return db_of("jobs")


def new_employer(jobs, name="蜀道机械有限公司", region="510104"):
    return jobs.create_employer(ADMIN, builders.employer_body(region, name=name))


def job_body(**kw):
    body = {"title": "电焊工", "category": "6", "region_code": "510104", "address": "成都市锦江区东大街1号",
            "salary_min": 6000, "salary_max": 9000, "headcount": 3, "education": "junior_high",
            "experience_years": 1, "description": "负责钢结构焊接 welding，持证上岗", "valid_until": later()}
    body.update(kw)
    return body


def outbox(db, event, **match):
    return [d["envelope"]["data"] for d in db.outbox.find({"type": event})
            if all(d["envelope"]["data"].get(k) == v for k, v in match.items())]


def code_of(fn, *args):
    with pytest.raises(AppError) as exc:
        fn(*args)
    return exc.value.status, exc.value.code


RESUME = {"name": "李四", "education": "senior_high", "experience_years": 3, "skills": ["焊接", "电焊证"],
          "summary": "吃苦耐劳"}


# ---- employers and postings -----------------------------------------------------------------------------------
def test_employers_are_created_in_scope_once_per_uscc(jobs):
    emp = new_employer(jobs)
    assert emp["region_code"] == "510104" and emp["size"] == "small"
    body = {"name": "另一家公司", "uscc": emp["uscc"], "region_code": "510104", "industry": "物流", "size": "large"}
    assert code_of(jobs.create_employer, ADMIN, body) == (409, "EMPLOYER_EXISTS")
    chengdu_only = dict(ADMIN, scope="5101")
    other = dict(body, uscc=ids.make_uscc("91510700%09d" % 1), region_code="510703")
    assert code_of(jobs.create_employer, chengdu_only, other) == (403, "OUT_OF_SCOPE")
    assert jobs.get_employer(emp["id"])["name"] == emp["name"]
    # an Idempotency-Key returns the first answer; another body with it is refused
    first = jobs.create_employer(ADMIN, dict(other, region_code="510104"), "k-1")
    assert jobs.create_employer(ADMIN, dict(other, region_code="510104"), "k-1") == first
    assert code_of(jobs.create_employer, ADMIN, dict(other, name="改名"), "k-1") == (422, "IDEMPOTENCY_KEY_REUSED")


def test_posting_announces_job_posted_and_is_found_by_chinese_latin_and_region(jobs, db):
    emp = new_employer(jobs)
    job = jobs.create_job(employer_actor(emp["id"]), job_body())
    assert job["employer_name"] == emp["name"] and job["status"] == "open"
    posted = outbox(db, "job_posted", job_id=job["id"])
    assert posted and posted[0]["employer_name"] == emp["name"] and posted[0]["salary_max"] == 9000
    for query in ({"q": "焊工"}, {"q": "welding", "region_code": "5101"}, {"q": "焊工", "region_code": "510104"},
                  {"q": "焊"}, {"category": "6", "region_code": "510100"}, {"salary_min": 6000}, {}):
        found = jobs.search_jobs(query)["items"]
        assert [j["id"] for j in found] == [job["id"]], query
    for query in ({"q": "叉车"}, {"q": "焊工", "region_code": "5107"}, {"category": "4"}, {"salary_min": 6001}):
        assert jobs.search_jobs(query)["items"] == [], query
    assert jobs.get_job(job["id"])["description"].startswith("负责")


def test_a_posting_needs_an_employer_record(jobs):
    assert code_of(jobs.create_job, employer_actor("no-such-employer"), job_body()) == (403, "NOT_AN_EMPLOYER")
    assert code_of(jobs.create_job, member("u1"), job_body()) == (403, "NOT_AN_EMPLOYER")


def test_closing_is_for_the_owner_and_removes_the_posting_from_search(jobs, db):
    emp, other = new_employer(jobs), new_employer(jobs, "别家公司")
    job = jobs.create_job(employer_actor(emp["id"]), job_body())
    assert db.search_stats.find_one({"_id": "w:焊工"})["n"] == 1
    assert code_of(jobs.close_job, employer_actor(other["id"]), job["id"]) == (403, "NOT_OWNER")
    assert code_of(jobs.close_job, employer_actor(emp["id"]), "nope") == (404, "NOT_FOUND")
    closed = jobs.close_job(employer_actor(emp["id"]), job["id"])
    assert closed["status"] == "closed" and closed["closed_reason"] == "closed"
    assert jobs.close_job(employer_actor(emp["id"]), job["id"])["status"] == "closed"  # again: same answer
    assert outbox(db, "job_closed", job_id=job["id"]) == [
        {"job_id": job["id"], "employer_id": emp["id"], "reason": "closed"}]
    assert jobs.search_jobs({"q": "焊工"})["items"] == []
    assert db.search_stats.find_one({"_id": "w:焊工"})["n"] == 0


def test_expiry_timer_closes_due_postings_once(jobs, db):
    emp = new_employer(jobs)
    due = jobs.create_job(employer_actor(emp["id"]), job_body())
    keep = jobs.create_job(employer_actor(emp["id"]), job_body(title="叉车司机"))
    # time passes for one of them
    db.jobs.update_one({"_id": due["id"]}, {"$set": {"valid_until": clock.now() - datetime.timedelta(seconds=1)}})
    assert jobs.get_job(due["id"])["closed_reason"] == "expired"  # reads as expired before the timer runs
    assert [j["id"] for j in jobs.search_jobs({})["items"]] == [keep["id"]]
    assert jobs.expire_postings() == 1
    assert jobs.expire_postings() == 0
    assert outbox(db, "job_closed", job_id=due["id"]) == [
        {"job_id": due["id"], "employer_id": emp["id"], "reason": "expired"}]
    doc = db.jobs.find_one({"_id": due["id"]})
    assert doc["status"] == "closed" and doc["search_keys"] == []
    assert db.jobs.find_one({"_id": keep["id"]})["status"] == "open"


# ---- search at a few thousand postings: windows and cursors against brute force ---------------------------------
@pytest.mark.parametrize("window_candidates", [search.WINDOW_CANDIDATES, 10])
def test_paged_search_equals_brute_force_over_seeded_postings(jobs, db, monkeypatch, window_candidates):
    from services.jobs import seed_scale, store
    monkeypatch.setattr(search, "WINDOW_CANDIDATES", window_candidates)  # 10: many small windows per page
    seed_scale.seed(db, 60, 3000, 0, batch=1000, days=60, rng_seed=7)
    now = clock.now()
    every = list(db.jobs.find({"status": "open"}))
    queries = [{"q": "焊工"}, {"q": "welding", "region_code": "5101"}, {"region_code": "5101", "category": "4"},
               {"salary_min": 9000}, {"q": "叉车司机"}, {}, {"q": "国防教育", "region_code": "510104"},
               {"region_code": "51", "category": "6"}]
    for query in queries:
        flt = {"tokens": search.query_tokens(query.get("q", "")), "region_code": query.get("region_code"),
               "category": query.get("category"), "salary_min": query.get("salary_min")}
        keys = search.query_keys(flt)
        expected = sorted((d["order_key"] for d in every if d["valid_until"] > now and
                           search.matches(d, keys, flt["salary_min"])), reverse=True)
        got, cursor = [], None
        while True:
            docs, next_key = store.search_jobs(db, flt, 17, cursor, now)
            got += [d["order_key"] for d in docs]
            if not next_key:
                break
            cursor = search.encode_cursor(next_key)
        assert got == expected, (query, len(got), len(expected))
    # the RPC answers the same pages, with a cursor that leads on
    welders = [k[-24:] for k in sorted((d["order_key"] for d in every if d["valid_until"] > now and
                                        "w:焊工" in d["search_keys"]), reverse=True)]
    first = jobs.search_jobs({"q": "焊工", "limit": 5})
    second = jobs.search_jobs({"q": "焊工", "limit": 5, "cursor": first["next_cursor"]})
    assert [j["id"] for j in first["items"] + second["items"]] == welders[:10]


def test_the_search_index_serves_the_windowed_query(jobs, db):
    emp = new_employer(jobs)
    jobs.create_job(employer_actor(emp["id"]), job_body())
    plan = db.command("explain", {"find": "jobs", "filter": {
        "search_keys": "w:焊工", "order_key": {"$gte": "1700000000000", "$lt": search.order_key(
            1900000000000, "0" * 24)}}})["queryPlanner"]["winningPlan"]
    assert "IXSCAN" in str(plan) and "'indexName': 'search_keys_order'" in str(plan)
    expiry = db.command("explain", {"find": "jobs", "filter": {"status": "open",
                                                               "valid_until": {"$lte": clock.now()}}})
    assert "'indexName': 'expiry'" in str(expiry["queryPlanner"]["winningPlan"])


# ---- resumes, applications ------------------------------------------------------------------------------------
def test_applying_needs_a_resume_an_open_posting_and_happens_once(jobs, db):
    emp = new_employer(jobs)
    job = jobs.create_job(employer_actor(emp["id"]), job_body())
    assert code_of(jobs.apply, member("u1"), job["id"]) == (409, "RESUME_REQUIRED")
    assert jobs.put_resume(member("u1"), RESUME)["name"] == "李四"
    app = jobs.apply(member("u1"), job["id"])
    assert app["status"] == "submitted"
    assert code_of(jobs.apply, member("u1"), job["id"]) == (409, "ALREADY_APPLIED")
    assert code_of(jobs.apply, member("u1"), "nope") == (404, "NOT_FOUND")
    assert outbox(db, "application_submitted") == [{"application_id": app["id"], "job_id": job["id"],
                                                    "job_title": "电焊工", "employer_id": emp["id"],
                                                    "user_id": "u1"}]
    mine = jobs.my_applications(member("u1"), {})
    assert [(a["job_title"], a["status"]) for a in mine["items"]] == [("电焊工", "submitted")]
    jobs.close_job(employer_actor(emp["id"]), job["id"])
    jobs.put_resume(member("u2"), RESUME)
    assert code_of(jobs.apply, member("u2"), job["id"]) == (409, "CLOSED")
    assert db.jobs.find_one({"_id": job["id"]})["applications"] == 1


def test_concurrent_applications_of_one_member_make_one(jobs, db, config):
    emp = new_employer(jobs)
    job = jobs.create_job(employer_actor(emp["id"]), job_body())
    jobs.put_resume(member("u9"), RESUME)

    def apply(_):
        with ServiceRpcProxy("jobs", config) as proxy:  # real RPC calls, all in flight at once
            return _try(proxy.apply, member("u9"), job["id"])
    outcomes = list(eventlet.GreenPool().imap(apply, range(8)))
    assert outcomes.count("ok") == 1 and set(outcomes) == {"ok", "ALREADY_APPLIED"}
    assert db.applications.count_documents({"job_id": job["id"]}) == 1
    assert len(outbox(db, "application_submitted", job_id=job["id"])) == 1


def _try(fn, *args):
    try:
        fn(*args)
        return "ok"
    except AppError as exc:
        return exc.code


def test_status_flow_is_the_owners_and_moves_forward_only(jobs, db):
    emp, other = new_employer(jobs), new_employer(jobs, "别家公司")
    job = jobs.create_job(employer_actor(emp["id"]), job_body())
    jobs.put_resume(member("u1"), RESUME)
    app = jobs.apply(member("u1"), job["id"])
    owner = employer_actor(emp["id"])
    assert code_of(jobs.set_application_status, employer_actor(other["id"]), app["id"], {"status": "viewed"}) == \
        (403, "NOT_OWNER")
    assert code_of(jobs.set_application_status, owner, app["id"], {"status": "hired"})[0] == 400
    assert code_of(jobs.set_application_status, owner, "nope", {"status": "viewed"}) == (404, "NOT_FOUND")
    assert jobs.set_application_status(owner, app["id"], {"status": "viewed"})["status"] == "viewed"
    assert jobs.set_application_status(owner, app["id"], {"status": "viewed"})["status"] == "viewed"  # no change
    assert jobs.set_application_status(owner, app["id"], {"status": "interview"})["status"] == "interview"
    assert code_of(jobs.set_application_status, owner, app["id"], {"status": "viewed"}) == \
        (409, "INVALID_TRANSITION")
    assert jobs.set_application_status(owner, app["id"], {"status": "offer"})["status"] == "offer"
    assert code_of(jobs.set_application_status, owner, app["id"], {"status": "rejected"}) == \
        (409, "INVALID_TRANSITION")
    assert [d["status"] for d in outbox(db, "application_status_changed", application_id=app["id"])] == \
        ["viewed", "interview", "offer"]
    assert jobs.my_applications(member("u1"), {})["items"][0]["status"] == "offer"


def test_employers_see_resume_and_masked_phone_from_membership_events(jobs, db, config):
    emp = new_employer(jobs)
    job = jobs.create_job(employer_actor(emp["id"]), job_body())
    number = ids.make_resident_id("510104", "19900101", 7)
    joined = events.build("membership", "member_joined", {
        "member_id": "m1", "user_id": "u1", "union_id": "g1", "union_code": "5101040001", "region_code": "510104",
        "occupation_group": "courier", "status": "active", "card_no": "C1", "joined_at": events.rfc3339(
            clock.now()), "phone_masked": "138****5678"})
    dispatch = event_dispatcher(config)
    dispatch("membership", "member_joined", joined)
    wait_for(lambda: db.members.find_one({"_id": "u1"}))
    jobs.put_resume(member("u1"), RESUME)
    jobs.apply(member("u1"), job["id"])
    seen = jobs.employer_applications(employer_actor(emp["id"]), {"job_id": job["id"]})["items"]
    assert seen[0]["applicant"]["phone_masked"] == "138****5678"
    assert seen[0]["applicant"]["skills"] == ["焊接", "电焊证"]
    assert "user_id" not in seen[0] and number not in str(seen)
    other = new_employer(jobs, "别家公司")
    assert code_of(jobs.employer_applications, employer_actor(other["id"]), {"job_id": job["id"]}) == \
        (403, "NOT_OWNER")
    assert jobs.employer_applications(employer_actor(other["id"]), {})["items"] == []
    # a member who leaves with erasure takes resume and phone along
    dispatch("membership", "member_left", events.build("membership", "member_left", {
        "member_id": "m1", "user_id": "u1", "union_id": "g1", "erased": True}))
    wait_for(lambda: db.resumes.find_one({"_id": "u1"}) is None)
    assert db.members.find_one({"_id": "u1"}) is None
    assert jobs.employer_applications(employer_actor(emp["id"]), {})["items"][0]["applicant"]["name"] is None


# ---- fairs ----------------------------------------------------------------------------------------------------
def fair_body(**kw):
    body = {"title": "春风行动招聘会", "kind": "onsite", "region_code": "510100", "venue": "成都世纪城会展中心",
            "starts_at": later(2), "ends_at": later(3)}
    body.update(kw)
    return body


def test_fairs_booths_and_listings(jobs, db):
    fair = jobs.create_fair(ADMIN, fair_body())
    assert fair["booth_count"] == 0
    assert outbox(db, "fair_scheduled", fair_id=fair["id"])[0]["kind"] == "onsite"
    assert code_of(jobs.create_fair, dict(ADMIN, scope="5107"), fair_body()) == (403, "OUT_OF_SCOPE")
    emp, other = new_employer(jobs), new_employer(jobs, "别家公司")
    mine = jobs.create_job(employer_actor(emp["id"]), job_body())
    theirs = jobs.create_job(employer_actor(other["id"]), job_body(title="叉车司机"))
    assert code_of(jobs.add_booth, employer_actor(emp["id"]), fair["id"], {"job_ids": [mine["id"], theirs["id"]]}) \
        == (403, "NOT_OWNER")
    assert code_of(jobs.add_booth, employer_actor(emp["id"]), "nope", {"job_ids": [mine["id"]]})[0] == 404
    booth = jobs.add_booth(employer_actor(emp["id"]), fair["id"], {"job_ids": [mine["id"]]})
    assert booth["job_ids"] == [mine["id"]]
    assert code_of(jobs.add_booth, employer_actor(emp["id"]), fair["id"], {"job_ids": [mine["id"]]}) == \
        (409, "BOOTH_EXISTS")
    jobs.close_job(employer_actor(other["id"]), theirs["id"])
    assert code_of(jobs.add_booth, employer_actor(other["id"]), fair["id"], {"job_ids": [theirs["id"]]}) == \
        (409, "CLOSED")
    listed = jobs.list_fairs({"region_code": "5101", "upcoming": True})["items"]
    assert [(f["id"], f["booth_count"]) for f in listed] == [(fair["id"], 1)]
    assert jobs.list_fairs({"region_code": "5107"})["items"] == []
    full = jobs.get_fair(fair["id"])
    assert [(e["employer_name"], [p["id"] for p in e["postings"]]) for e in full["employers"]] == \
        [(emp["name"], [mine["id"]])]
    # a fair that has ended takes no more booths
    db.fairs.update_one({"_id": fair["id"]}, {"$set": {"ends_at": clock.now() - datetime.timedelta(hours=1)}})
    assert code_of(jobs.add_booth, employer_actor(other["id"]), fair["id"], {"job_ids": [
        jobs.create_job(employer_actor(other["id"]), job_body())["id"]]}) == (409, "FAIR_ENDED")
    assert jobs.list_fairs({"upcoming": True})["items"] == []


def test_fair_lists_page_with_cursors(jobs):
    made = [jobs.create_fair(ADMIN, fair_body(title="招聘会%d" % i, starts_at=later(2 + i), ends_at=later(3 + i)))
            for i in range(5)]
    seen, cursor = [], None
    while True:
        page = jobs.list_fairs({"upcoming": True, "limit": 2, "cursor": cursor})
        seen += [f["id"] for f in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f["id"] for f in made]  # soonest first
    newest = jobs.list_fairs({"limit": 100})["items"]
    assert [f["id"] for f in newest] == [f["id"] for f in reversed(made)]


# ---- job alerts -----------------------------------------------------------------------------------------------
def test_new_postings_are_matched_against_alerts_from_the_event(jobs, db):
    jobs.put_job_alert(member("u1"), {"region_codes": ["5101"], "keywords": ["焊工"]})
    jobs.put_job_alert(member("u2"), {"categories": ["4"]})
    jobs.put_job_alert(member("u3"), {"keywords": ["welding", "叉车"]})
    jobs.put_job_alert(member("u4"), {"region_codes": ["510703"]})
    assert jobs.get_job_alert(member("u1"))["keywords"] == ["焊工"]
    emp = new_employer(jobs)
    job = jobs.create_job(employer_actor(emp["id"]), job_body())
    matched = wait_for(lambda: outbox(db, "job_alert_matched", job_id=job["id"]))
    assert matched == [{"job_id": job["id"], "title": "电焊工", "employer_name": emp["name"],
                        "region_code": "510104", "user_ids": ["u1", "u3"]}]
    jobs.delete_job_alert(member("u1"))
    assert code_of(jobs.get_job_alert, member("u1")) == (404, "NOT_FOUND")
    # the same job_posted delivered again has no second effect
    env = db.outbox.find_one({"type": "job_posted", "envelope.data.job_id": job["id"]})["envelope"]
    before = db.processed_events.count_documents({})
    event_dispatcher(jobs.container.config)("jobs", "job_posted", env)
    eventlet.sleep(0.5)
    assert len(outbox(db, "job_alert_matched", job_id=job["id"])) == 1
    assert db.processed_events.count_documents({}) == before

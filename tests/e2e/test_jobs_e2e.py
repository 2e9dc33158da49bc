"""Jobs through the gateway, every process started as `make run` starts them: employers, postings and search,
resumes, applications and their status flow, job fairs and booths, job alerts, and the bad input each route must
refuse with a problem document."""
import datetime
import time
import uuid

import jwt
import pytest
import requests

from support import builders, client
from support.client import admin_token, auth, member_token, new_member, problem, staff_token
from unionhub_kit import ids
from support.stack import wait_for


def call(stack, method, path, token=None, body=None, headers=None, **params):
    h = dict(auth(token) if token else {}, **(headers or {}))
    return requests.request(method, stack.url + path, json=body, headers=h, params=params or None, timeout=20)


def later(days):
    return (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)).isoformat()


def employer_body(**kw):
    return builders.employer_body(**dict({"size": "medium"}, **kw))


def job_body(**kw):
    return dict({"title": "电焊工", "category": "6", "region_code": "510104", "address": "成都市锦江区东大街1号",
                 "salary_min": 6000, "salary_max": 9000, "headcount": 3, "education": "junior_high",
                 "experience_years": 1, "description": "负责钢结构焊接 welding，持焊工证上岗，包吃住",
                 "valid_until": later(30)}, **kw)


RESUME = {"name": "李四", "education": "senior_high", "experience_years": 3, "skills": ["焊接", "电焊证"],
          "desired_categories": ["6"], "desired_region_codes": ["510100"], "summary": "吃苦耐劳，会氩弧焊"}


@pytest.fixture(scope="module")
def world(stack):
    """An admin, two employers with their accounts, and one posting each."""
    admin = admin_token(stack)
    out = {"admin": admin}
    for who in ("a", "b"):
        r = call(stack, "POST", "/api/v1/employers", admin, employer_body())
        assert r.status_code == 201, r.text
        emp = r.json()
        out[who] = emp
        out[who + "_token"] = staff_token(stack, admin, "emp-%s-%s" % (who, uuid.uuid4().hex[:6]), "employer",
                                          employer_id=emp["id"])
    return out


def post_job(stack, token, **kw):
    r = call(stack, "POST", "/api/v1/jobs", token, job_body(**kw))
    assert r.status_code == 201, r.text
    return r.json()


# ---- employers ------------------------------------------------------------------------------------------------
def test_employers_are_registered_by_union_staff_with_a_valid_uscc(stack, world):
    admin = world["admin"]
    problem(call(stack, "POST", "/api/v1/employers", admin, employer_body(uscc="91512081MA62K0260F")), 400,
            "VALIDATION_ERROR", "uscc")
    problem(call(stack, "POST", "/api/v1/employers", admin, employer_body(region_code="519999")), 400,
            "VALIDATION_ERROR", "region_code")
    body = employer_body()
    del body["industry"]
    problem(call(stack, "POST", "/api/v1/employers", admin, body), 400, "VALIDATION_ERROR", "industry")
    problem(call(stack, "POST", "/api/v1/employers", None, employer_body()), 401, "UNAUTHORIZED")
    problem(call(stack, "POST", "/api/v1/employers", world["a_token"], employer_body()), 403, "FORBIDDEN")
    problem(call(stack, "POST", "/api/v1/employers", admin, employer_body(uscc=world["a"]["uscc"])), 409,
            "EMPLOYER_EXISTS")
    key = {"Idempotency-Key": "emp-" + uuid.uuid4().hex}
    body = employer_body()
    first = call(stack, "POST", "/api/v1/employers", admin, body, key)
    assert first.status_code == 201
    assert call(stack, "POST", "/api/v1/employers", admin, body, key).json() == first.json()
    got = call(stack, "GET", "/api/v1/employers/" + first.json()["id"])
    assert got.status_code == 200 and got.json()["uscc"] == body["uscc"]


# ---- postings and search --------------------------------------------------------------------------------------
@pytest.mark.parametrize("change,field", [
    ({"salary_min": 9500}, "salary_min"),
    ({"headcount": 0}, "headcount"),
    ({"valid_until": "2020-01-01T00:00:00Z"}, "valid_until"),
    ({"region_code": "510199"}, "region_code"),
    ({"category": "9"}, "category"),
    ({"description": None}, "description"),
])
def test_bad_postings_are_refused(stack, world, change, field):
    body = {k: v for k, v in job_body(**change).items() if v is not None}
    problem(call(stack, "POST", "/api/v1/jobs", world["a_token"], body), 400, "VALIDATION_ERROR", field)


def test_search_answers_chinese_and_latin_keywords_with_region_prefix(stack, world):
    tag = uuid.uuid4().hex[:8]  # a word only this test's postings carry
    welder = post_job(stack, world["a_token"], description="钢结构焊接 welding %s，持焊工证上岗" % tag)
    rider = post_job(stack, world["b_token"], title="外卖骑手", category="4", region_code="510703",
                     description="负责片区配送 %s" % tag, salary_min=5000, salary_max=9000)
    assert welder["employer_name"] == world["a"]["name"]

    def ids_of(**params):
        r = call(stack, "GET", "/api/v1/jobs", **params)
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["items"]]
    assert ids_of(q="焊工 " + tag, region_code="5101") == [welder["id"]]
    assert ids_of(q="welding " + tag, region_code="5101") == [welder["id"]]
    assert ids_of(q="Welding " + tag, region_code="510100") == [welder["id"]]
    assert ids_of(q="焊工 " + tag, region_code="5107") == []
    assert ids_of(q=tag) == [rider["id"], welder["id"]]  # newest first
    assert ids_of(q=tag, category="4") == [rider["id"]]
    assert ids_of(q=tag, salary_min=5500) == [welder["id"]]
    assert ids_of(q="外卖 " + tag, region_code="51") == [rider["id"]]
    one = call(stack, "GET", "/api/v1/jobs", q=tag, limit=1).json()
    assert [j["id"] for j in one["items"]] == [rider["id"]] and one["next_cursor"]
    two = call(stack, "GET", "/api/v1/jobs", q=tag, limit=1, cursor=one["next_cursor"]).json()
    assert [j["id"] for j in two["items"]] == [welder["id"]]
    got = call(stack, "GET", "/api/v1/jobs/" + welder["id"]).json()
    assert got["employer_name"] == world["a"]["name"] and got["description"].startswith("钢结构")
    problem(call(stack, "GET", "/api/v1/jobs/nope"), 404, "NOT_FOUND")


def test_search_refuses_bad_queries(stack):
    problem(call(stack, "GET", "/api/v1/jobs", limit=101), 400, "VALIDATION_ERROR", "limit")
    problem(call(stack, "GET", "/api/v1/jobs", cursor="not-a-cursor"), 400, "VALIDATION_ERROR", "cursor")
    problem(call(stack, "GET", "/api/v1/jobs", region_code="5199"), 400, "VALIDATION_ERROR", "region_code")
    problem(call(stack, "GET", "/api/v1/jobs", category="0"), 400, "VALIDATION_ERROR", "category")
    problem(call(stack, "GET", "/api/v1/jobs", sort="salary"), 400, "VALIDATION_ERROR", "sort")


def test_closing_is_for_the_owner(stack, world):
    job = post_job(stack, world["a_token"])
    problem(call(stack, "POST", "/api/v1/jobs/%s/close" % job["id"], world["b_token"]), 403, "NOT_OWNER")
    r = call(stack, "POST", "/api/v1/jobs/%s/close" % job["id"], world["a_token"])
    assert r.status_code == 200 and r.json()["status"] == "closed"
    assert call(stack, "GET", "/api/v1/jobs/" + job["id"]).json()["status"] == "closed"
    mine = call(stack, "GET", "/api/v1/employer/jobs", world["a_token"], limit=100).json()["items"]
    assert job["id"] in [j["id"] for j in mine]


# ---- resumes and applications ---------------------------------------------------------------------------------
def test_apply_flow_with_resume_masked_phone_and_status_changes(stack, world):
    token, joined, phone = new_member(stack)
    job = post_job(stack, world["a_token"])
    apply = "/api/v1/jobs/%s/applications" % job["id"]
    problem(call(stack, "POST", apply, token), 409, "RESUME_REQUIRED")
    number = ids.make_resident_id("510104", "19900101", 11)
    problem(call(stack, "PUT", "/api/v1/members/me/resume", token, dict(RESUME, id_number=number)), 400,
            "VALIDATION_ERROR", "id_number")
    problem(call(stack, "PUT", "/api/v1/members/me/resume", token, dict(RESUME, summary="身份证%s" % number)), 400,
            "VALIDATION_ERROR", "summary")
    r = call(stack, "PUT", "/api/v1/members/me/resume", token, RESUME)
    assert r.status_code == 200 and r.json()["desired_region_codes"] == ["5101"]
    key = {"Idempotency-Key": "apply-" + uuid.uuid4().hex}
    first = call(stack, "POST", apply, token, headers=key)
    assert first.status_code == 201 and first.json()["status"] == "submitted"
    assert call(stack, "POST", apply, token, headers=key).json() == first.json()  # the same key: the same answer
    problem(call(stack, "POST", apply, token), 409, "ALREADY_APPLIED")
    problem(call(stack, "POST", "/api/v1/jobs/nope/applications", token), 404, "NOT_FOUND")
    mine = call(stack, "GET", "/api/v1/members/me/applications", token).json()["items"]
    assert [(a["job_title"], a["status"]) for a in mine] == [("电焊工", "submitted")]

    # the employer sees resume and masked phone (from membership's member_joined), never the full phone
    def seen():
        r = call(stack, "GET", "/api/v1/employer/applications", world["a_token"], job_id=job["id"])
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        return items if items and items[0]["applicant"]["phone_masked"] else None
    items = wait_for(seen, 15, what="the masked phone reaching jobs")
    assert items[0]["applicant"]["phone_masked"] == ids.mask_phone(phone)
    assert items[0]["applicant"]["skills"] == RESUME["skills"]
    assert phone not in str(items) and "id_number" not in str(items)
    problem(call(stack, "GET", "/api/v1/employer/applications", world["b_token"], job_id=job["id"]), 403, "NOT_OWNER")
    others = call(stack, "GET", "/api/v1/employer/applications", world["b_token"]).json()["items"]
    assert all(a["job_id"] != job["id"] for a in others)

    status = "/api/v1/applications/%s/status" % first.json()["id"]
    changes = client.EventTap(stack.env["AMQP_URI"], "jobs", "application_status_changed")
    problem(call(stack, "POST", status, world["b_token"], {"status": "viewed"}), 403, "NOT_OWNER")
    problem(call(stack, "POST", status, world["a_token"], {"status": "hired"}), 400, "VALIDATION_ERROR", "status")
    problem(call(stack, "POST", status, token, {"status": "offer"}), 403, "FORBIDDEN")
    for step in ("viewed", "interview"):
        r = call(stack, "POST", status, world["a_token"], {"status": step})
        assert r.status_code == 200 and r.json()["status"] == step
    problem(call(stack, "POST", status, world["a_token"], {"status": "viewed"}), 409, "INVALID_TRANSITION")
    assert call(stack, "GET", "/api/v1/members/me/applications", token).json()["items"][0]["status"] == "interview"
    wait_for(lambda: len(changes.messages(application_id=first.json()["id"])) >= 2, what="the two status events")
    time.sleep(0.5)  # no third one (the refused transition emitted nothing)
    assert len(changes.messages(application_id=first.json()["id"])) == 2
    changes.close()

    # a closed posting takes no applications
    call(stack, "POST", "/api/v1/jobs/%s/close" % job["id"], world["a_token"])
    other = member_token(stack)
    call(stack, "PUT", "/api/v1/members/me/resume", other, RESUME)
    problem(call(stack, "POST", apply, other), 409, "CLOSED")
    problem(call(stack, "GET", "/api/v1/members/me/applications", token, limit=500), 400, "VALIDATION_ERROR", "limit")
    problem(call(stack, "GET", "/api/v1/members/me/applications", token, cursor="%%%"), 400, "VALIDATION_ERROR",
            "cursor")


# ---- job fairs ------------------------------------------------------------------------------------------------
def fair_body(**kw):
    return dict({"title": "春风行动招聘会", "kind": "onsite", "region_code": "510100", "venue": "成都世纪城会展中心",
                 "starts_at": later(2), "ends_at": later(3)}, **kw)


def test_fairs_and_booths(stack, world):
    admin = world["admin"]
    problem(call(stack, "POST", "/api/v1/fairs", admin, fair_body(ends_at=later(1))), 400, "VALIDATION_ERROR",
            "ends_at")
    problem(call(stack, "POST", "/api/v1/fairs", admin, fair_body(kind="hybrid")), 400, "VALIDATION_ERROR", "kind")
    problem(call(stack, "POST", "/api/v1/fairs", admin, fair_body(kind="livestream")), 400, "VALIDATION_ERROR",
            "stream_url")
    body = fair_body()
    del body["venue"]
    problem(call(stack, "POST", "/api/v1/fairs", admin, body), 400, "VALIDATION_ERROR", "venue")
    problem(call(stack, "POST", "/api/v1/fairs", world["a_token"], fair_body()), 403, "FORBIDDEN")
    live = call(stack, "POST", "/api/v1/fairs", admin, {k: v for k, v in fair_body(
        kind="livestream", stream_url="https://live.example.cn/room/9", region_code="510703").items()
        if k != "venue"})
    assert live.status_code == 201, live.text
    r = call(stack, "POST", "/api/v1/fairs", admin, fair_body())
    assert r.status_code == 201, r.text
    fair = r.json()

    mine = post_job(stack, world["a_token"])
    theirs = post_job(stack, world["b_token"], title="叉车司机")
    booths = "/api/v1/fairs/%s/booths" % fair["id"]
    problem(call(stack, "POST", booths, world["a_token"], {"job_ids": [theirs["id"]]}), 403, "NOT_OWNER")
    problem(call(stack, "POST", booths, world["a_token"], {"job_ids": []}), 400, "VALIDATION_ERROR", "job_ids")
    problem(call(stack, "POST", "/api/v1/fairs/nope/booths", world["a_token"], {"job_ids": [mine["id"]]}), 404,
            "NOT_FOUND")
    r = call(stack, "POST", booths, world["a_token"], {"job_ids": [mine["id"]]})
    assert r.status_code == 201, r.text
    problem(call(stack, "POST", booths, world["a_token"], {"job_ids": [mine["id"]]}), 409, "BOOTH_EXISTS")

    listed = call(stack, "GET", "/api/v1/fairs", region_code="5101", upcoming="true", limit=100).json()["items"]
    assert {f["id"]: f["booth_count"] for f in listed}[fair["id"]] == 1
    assert live.json()["id"] not in [f["id"] for f in listed]
    got = call(stack, "GET", "/api/v1/fairs/" + fair["id"]).json()
    assert [(e["employer_name"], [p["id"] for p in e["postings"]]) for e in got["employers"]] == \
        [(world["a"]["name"], [mine["id"]])]
    problem(call(stack, "GET", "/api/v1/fairs/nope"), 404, "NOT_FOUND")
    problem(call(stack, "GET", "/api/v1/fairs", upcoming="maybe"), 400, "VALIDATION_ERROR", "upcoming")


# ---- job alerts -----------------------------------------------------------------------------------------------
def test_job_alert_matches_new_postings_from_the_event(stack, world):
    token = member_token(stack)
    problem(call(stack, "PUT", "/api/v1/members/me/job-alerts", token, {}), 400, "VALIDATION_ERROR")
    problem(call(stack, "PUT", "/api/v1/members/me/job-alerts", token, {"region_codes": ["5199"]}), 400,
            "VALIDATION_ERROR")
    tag = uuid.uuid4().hex[:8]
    r = call(stack, "PUT", "/api/v1/members/me/job-alerts", token, {"region_codes": ["510100"],
                                                                    "keywords": ["焊工" + tag]})
    assert r.status_code == 200 and r.json()["region_codes"] == ["5101"]
    assert call(stack, "GET", "/api/v1/members/me/job-alerts", token).json()["keywords"] == ["焊工" + tag]
    alerts = client.EventTap(stack.env["AMQP_URI"], "jobs", "job_alert_matched")
    job = post_job(stack, world["a_token"], description="急招焊工%s，持证上岗" % tag)
    matched = wait_for(lambda: alerts.messages(job_id=job["id"]), 15, what="job_alert_matched")[0]
    alerts.close()
    user_id = jwt.decode(token, options={"verify_signature": False})["sub"]
    assert matched["data"]["user_ids"] == [user_id]
    assert call(stack, "DELETE", "/api/v1/members/me/job-alerts", token).status_code == 204
    problem(call(stack, "GET", "/api/v1/members/me/job-alerts", token), 404, "NOT_FOUND")

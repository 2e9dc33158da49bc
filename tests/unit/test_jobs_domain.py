"""Jobs rules without broker or store: the application flow, what employers see, job alerts, the schemas."""
import datetime

import pytest

from services.jobs import domain, schemas, search
from unionhub_kit import ids
from unionhub_kit.errors import ValidationFailed
from unionhub_kit.schema import load

NOW = datetime.datetime.now(datetime.timezone.utc)


def iso(delta_days):
    return (NOW + datetime.timedelta(days=delta_days)).isoformat()


# ---- application flow -----------------------------------------------------------------------------------------
def test_statuses_move_forward_and_reject_only_before_a_decision():
    assert domain.sources_for("viewed") == ["submitted"]
    assert domain.sources_for("interview") == ["submitted", "viewed"]
    assert domain.sources_for("offer") == ["submitted", "viewed", "interview"]
    assert domain.sources_for("rejected") == ["submitted", "viewed", "interview"]
    for target in domain.TARGET_STATUSES:
        assert "offer" not in domain.sources_for(target) and "rejected" not in domain.sources_for(target)


def test_employers_see_the_resume_and_masked_phone_only():
    resume = {"_id": "u1", "name": "李四", "education": "senior_high", "experience_years": 3, "skills": ["焊接"],
              "desired_categories": ["6"], "desired_region_codes": ["5101"], "summary": "吃苦耐劳",
              "updated_at": NOW}
    view = domain.applicant_view(resume, {"_id": "u1", "phone_masked": "138****5678", "member_id": "m1"})
    assert view["phone_masked"] == "138****5678" and view["name"] == "李四"
    assert set(view) == {"name", "education", "experience_years", "skills", "desired_categories",
                         "desired_region_codes", "summary", "phone_masked"}
    assert domain.applicant_view(None, None)["phone_masked"] is None


def test_resident_id_numbers_are_spotted_in_free_text():
    number = ids.make_resident_id("510104", "19900101", 123)
    assert domain.contains_id_number("身份证 %s 请联系" % number)
    assert not domain.contains_id_number("电话 13812345678，工号 123456789012345678")  # fails the check character
    assert not domain.contains_id_number(None)


# ---- job alerts -----------------------------------------------------------------------------------------------
POSTING_KEYS = search.search_keys({"title": "电焊工", "description": "welding 持证", "category": "6",
                                   "region_code": "510104", "salary_min": 6000})


def alert(regions=(), cats=(), words=()):
    return domain.alert_conditions(list(regions), list(cats), list(words))


def test_alert_anchors_come_from_the_most_selective_dimension():
    assert alert(["5101"], ["6"], ["焊工"])["anchors"] == ["r:5101"]
    assert alert([], ["6", "4"], ["焊工"])["anchors"] == ["c:6", "c:4"]
    assert alert([], [], ["电焊工", "welding"])["anchors"] == ["w:welding", "w:电焊"]
    assert alert(["51"], ["6"])["anchors"] == ["c:6"]  # the province restricts nothing
    assert alert(["51"])["anchors"] == ["*"]


def test_alert_dimensions_combine_with_and_values_with_or():
    assert domain.alert_matches(alert(["5101"]), POSTING_KEYS)
    assert domain.alert_matches(alert(["5107", "510104"]), POSTING_KEYS)
    assert not domain.alert_matches(alert(["5107"]), POSTING_KEYS)
    assert domain.alert_matches(alert(["51"], ["4", "6"], ["叉车", "焊工"]), POSTING_KEYS)
    assert not domain.alert_matches(alert(["51"], ["4"]), POSTING_KEYS)
    assert not domain.alert_matches(alert([], [], ["叉车司机"]), POSTING_KEYS)
    assert domain.alert_matches(alert([], [], ["WELDING"]), POSTING_KEYS)


def test_every_alert_that_matches_is_found_by_its_anchors():
    for a in (alert(["5101"]), alert([], ["6"]), alert([], [], ["电焊工"]), alert(["510104"], [], ["welding"]),
              alert(["51"]), alert(["51", "5107"], ["6"])):
        assert domain.alert_matches(a, POSTING_KEYS)
        assert set(a["anchors"]) & set(POSTING_KEYS)


def test_user_ids_are_announced_in_chunks():
    assert [len(c) for c in domain.chunks(list(range(1201)))] == [500, 500, 201]
    assert domain.chunks([]) == []


# ---- schemas --------------------------------------------------------------------------------------------------
JOB = {"title": "电焊工", "category": "6", "region_code": "510104", "address": "成都市锦江区东大街1号",
       "salary_min": 6000, "salary_max": 9000, "headcount": 3, "education": "junior_high", "experience_years": 1,
       "description": "负责钢结构焊接，持证上岗", "valid_until": iso(30)}


def errors_of(schema, data):
    with pytest.raises(ValidationFailed) as exc:
        load(schema, data)
    return exc.value.errors


def test_a_complete_posting_loads():
    p = load(schemas.JobCreate, JOB)
    assert p["valid_until"].tzinfo is not None and p["salary_max"] == 9000


@pytest.mark.parametrize("change,field", [
    ({"salary_min": 9500}, "salary_min"),
    ({"headcount": 0}, "headcount"),
    ({"headcount": -2}, "headcount"),
    ({"valid_until": iso(-1)}, "valid_until"),
    ({"valid_until": "tomorrow"}, "valid_until"),
    ({"region_code": "999999"}, "region_code"),
    ({"category": "9"}, "category"),
    ({"salary_min": "6000"}, "salary_min"),
    ({"salary_max": 9000.5}, "salary_max"),
    ({"education": "phd"}, "education"),
    ({"id_number": "510104198001011236"}, "id_number"),
])
def test_bad_postings_name_the_field(change, field):
    assert field in errors_of(schemas.JobCreate, dict(JOB, **change))


@pytest.mark.parametrize("missing", sorted(JOB))
def test_every_posting_field_is_required(missing):
    body = {k: v for k, v in JOB.items() if k != missing}
    assert missing in errors_of(schemas.JobCreate, body)


def test_employer_uscc_is_checked():
    body = {"name": "蜀道机械有限公司", "uscc": "91512081MA62K0260E", "region_code": "510104", "industry": "制造",
            "size": "small"}
    assert load(schemas.EmployerCreate, body)["uscc"] == "91512081MA62K0260E"
    assert "uscc" in errors_of(schemas.EmployerCreate, dict(body, uscc="91512081MA62K0260F"))
    assert "size" in errors_of(schemas.EmployerCreate, dict(body, size="huge"))


def test_search_query_rules():
    assert load(schemas.JobSearch, {"region_code": "510100", "limit": "50"}) == {
        "region_code": "5101", "limit": 50, "cursor": None}
    assert "limit" in errors_of(schemas.JobSearch, {"limit": 101})
    assert "cursor" in errors_of(schemas.JobSearch, {"cursor": "not-a-cursor"})
    assert "q" in errors_of(schemas.JobSearch, {"q": "!!!"})
    assert "region_code" in errors_of(schemas.JobSearch, {"region_code": "5199"})


def test_resume_refuses_an_id_number_anywhere():
    body = {"name": "李四", "education": "senior_high", "experience_years": 3}
    assert load(schemas.Resume, body)["skills"] == []
    number = ids.make_resident_id("510104", "19900101", 5)
    assert "summary" in errors_of(schemas.Resume, dict(body, summary="身份证号%s" % number))
    assert "skills" in errors_of(schemas.Resume, dict(body, skills=[number]))
    assert "id_number" in errors_of(schemas.Resume, dict(body, id_number=number))


FAIR = {"title": "春风行动招聘会", "kind": "onsite", "region_code": "510100", "venue": "成都世纪城会展中心",
        "starts_at": iso(3), "ends_at": iso(4)}


@pytest.mark.parametrize("change,field", [
    ({"ends_at": iso(2)}, "ends_at"),
    ({"starts_at": iso(-3), "ends_at": iso(-2)}, "ends_at"),
    ({"kind": "hybrid"}, "kind"),
    ({"venue": None}, "venue"),
    ({"kind": "livestream"}, "stream_url"),
    ({"kind": "livestream", "stream_url": "ftp://live.example.cn/x"}, "stream_url"),
])
def test_bad_fairs_name_the_field(change, field):
    body = {k: v for k, v in dict(FAIR, **change).items() if v is not None}
    assert field in errors_of(schemas.FairCreate, body)


def test_fairs_of_each_kind_load():
    assert load(schemas.FairCreate, FAIR)["kind"] == "onsite"
    live = dict(FAIR, kind="livestream", stream_url="https://live.example.cn/room/1")
    del live["venue"]
    assert load(schemas.FairCreate, live)["stream_url"].startswith("https://")
    online = {k: v for k, v in FAIR.items() if k != "venue"}
    assert load(schemas.FairCreate, dict(online, kind="online"))["kind"] == "online"


def test_booths_and_alerts():
    assert "job_ids" in errors_of(schemas.BoothCreate, {"job_ids": []})
    assert "job_ids" in errors_of(schemas.BoothCreate, {"job_ids": ["a", "a"]})
    assert "_schema" in errors_of(schemas.JobAlert, {})
    assert "keywords" in errors_of(schemas.JobAlert, {"keywords": ["!!"]})
    assert load(schemas.JobAlert, {"region_codes": ["510100"]}) == {"region_codes": ["5101"], "categories": [],
                                                                     "keywords": []}
    assert "status" in errors_of(schemas.StatusChange, {"status": "hired"})
    assert "status" in errors_of(schemas.StatusChange, {"status": "submitted"})

"""The membership schemas that validate both the HTTP bodies and the RPC payloads."""
import datetime

import pytest

from services.membership import schemas
from unionhub_kit import ids
from unionhub_kit.errors import ValidationFailed
from unionhub_kit.schema import load

JOIN = {"name": "张三", "id_number": "510104198001011236", "union_id": "un_5101040001", "employer": "蜀道快递",
        "occupation_group": "courier", "consent": True}


def errors_of(schema, data):
    with pytest.raises(ValidationFailed) as exc:
        load(schema, data)
    return exc.value.errors


def test_valid_join_loads_and_normalises_x():
    assert load(schemas.JoinRequest, JOIN) == JOIN
    got = load(schemas.JoinRequest, dict(JOIN, id_number="11010519491231002x"))
    assert got["id_number"] == "11010519491231002X"


@pytest.mark.parametrize("change,field", [
    ({"id_number": "510104198001011235"}, "id_number"),  # wrong check character
    ({"id_number": ids.make_resident_id(birth="19800230")}, "id_number"),  # impossible date
    ({"consent": False}, "consent"),
    ({"consent": "true"}, "consent"),
    ({"occupation_group": "pilot"}, "occupation_group"),
    ({"name": ""}, "name"),
    ({"union_id": "../x"}, "union_id"),
    ({"extra": 1}, "extra"),
    ({"name": 5}, "name"),
])
def test_bad_join_bodies(change, field):
    assert field in errors_of(schemas.JoinRequest, dict(JOIN, **change))


@pytest.mark.parametrize("missing", sorted(JOIN))
def test_every_join_field_is_required(missing):
    body = {k: v for k, v in JOIN.items() if k != missing}
    assert missing in errors_of(schemas.JoinRequest, body)


def test_under_sixteen_is_refused_and_sixteen_today_is_accepted():
    today = datetime.date.today()
    try:
        sixteen = today.replace(year=today.year - 16)
    except ValueError:  # 29 February
        sixteen = today.replace(year=today.year - 16, day=28)
    young = sixteen + datetime.timedelta(days=1)
    errs = errors_of(schemas.JoinRequest, dict(JOIN, id_number=ids.make_resident_id(birth=young.strftime("%Y%m%d"))))
    assert "16" in errs["id_number"][0]
    load(schemas.JoinRequest, dict(JOIN, id_number=ids.make_resident_id(birth=sixteen.strftime("%Y%m%d"))))


def test_the_error_message_does_not_echo_the_id_number():
    errs = errors_of(schemas.JoinRequest, dict(JOIN, id_number="510104198001011235"))
    assert "510104198001011235" not in str(errs) and "check character" in str(errs)


def test_token_request_is_one_kind_or_the_other():
    assert load(schemas.TokenRequest, {"phone": "13812345678", "code": "123456"})
    assert load(schemas.TokenRequest, {"username": "admin", "password": "x"})
    errors_of(schemas.TokenRequest, {})
    errors_of(schemas.TokenRequest, {"phone": "13812345678", "code": "123456", "username": "admin",
                                     "password": "x"})
    assert "code" in errors_of(schemas.TokenRequest, {"phone": "13812345678"})
    assert "phone" in errors_of(schemas.TokenRequest, {"phone": "12345", "code": "123456"})
    assert "code" in errors_of(schemas.TokenRequest, {"phone": "13812345678", "code": "12345a"})


def test_account_role_needs_its_ids():
    ok = {"username": "chengdu.admin", "password": "long-enough-pw", "role": "union_admin", "org_code": "5101"}
    assert load(schemas.AccountCreate, ok)["org_code"] == "5101"
    assert "org_code" in errors_of(schemas.AccountCreate, dict(ok, org_code=None) | {"org_code": "5x"})
    body = {k: v for k, v in ok.items() if k != "org_code"}
    assert "org_code" in errors_of(schemas.AccountCreate, body)
    assert "merchant_id" in errors_of(schemas.AccountCreate, dict(body, role="merchant"))
    assert "employer_id" in errors_of(schemas.AccountCreate, dict(body, role="employer"))
    assert "merchant_id" in errors_of(schemas.AccountCreate, dict(body, role="employer", employer_id="e1",
                                                                   merchant_id="m1"))
    assert "role" in errors_of(schemas.AccountCreate, dict(ok, role="member"))
    assert "password" in errors_of(schemas.AccountCreate, dict(ok, password="short"))
    assert "username" in errors_of(schemas.AccountCreate, dict(ok, username="Admin Root"))


def test_union_create():
    ok = {"name": "锦江区快递行业工会", "parent_id": "un_510104", "uscc": "91512081ma62k0260e", "auto_approve": True}
    assert load(schemas.UnionCreate, ok)["uscc"] == "91512081MA62K0260E"
    assert "uscc" in errors_of(schemas.UnionCreate, dict(ok, uscc="91512081MA62K0260F"))
    assert "auto_approve" in errors_of(schemas.UnionCreate, dict(ok, auto_approve="yes"))
    assert load(schemas.UnionCreate, {k: v for k, v in ok.items() if k != "auto_approve"})["auto_approve"] is False

"""Membership rules without broker or store: transitions, codes, card numbers, passwords, scopes, cursors, views."""
import datetime

import pytest

from services.membership import domain
from unionhub_kit import crypto, events
from unionhub_kit.errors import Conflict, Forbidden, ValidationFailed

ADMIN_51 = {"sub": "acc_1", "role": "union_admin", "scope": "51"}
ADMIN_5101 = {"sub": "acc_2", "role": "union_admin", "scope": "5101"}
ADMIN_510104 = {"sub": "acc_3", "role": "union_admin", "scope": "510104"}
MEMBER = {"sub": "usr_1", "role": "member"}


@pytest.mark.parametrize("status,action,to", [("pending", "approve", "active"), ("pending", "reject", "rejected"),
                                              ("pending", "leave", "left"), ("active", "leave", "left"),
                                              ("active", "transfer", "active")])
def test_allowed_transitions(status, action, to):
    assert domain.check_transition(status, action) == to


@pytest.mark.parametrize("status,action,code", [("active", "approve", "NOT_PENDING"), ("rejected", "approve",
                                                                                    "NOT_PENDING"),
                                                ("left", "reject", "NOT_PENDING"), ("pending", "transfer", "NOT_ACTIVE"),
                                                ("left", "leave", "NOT_A_MEMBER"),
                                                ("rejected", "leave", "NOT_A_MEMBER")])
def test_refused_transitions(status, action, code):
    with pytest.raises(Conflict) as exc:
        domain.check_transition(status, action)
    assert exc.value.code == code and exc.value.status == 409


def test_initial_status_follows_auto_approve():
    assert domain.initial_status({"auto_approve": True}) == "active"
    assert domain.initial_status({"auto_approve": False}) == "pending"


def test_card_and_grassroots_codes():
    assert domain.card_no(2026, 42) == "SC202600000042"
    assert domain.grassroots_code("510104", 1) == "5101040001"
    assert domain.grassroots_code("510100", 9999) == "5101009999"
    with pytest.raises(Conflict):
        domain.grassroots_code("510104", 10000)


def test_union_parent_and_joinable_levels():
    for level in ("county", "prefecture"):
        domain.check_union_parent({"level": level})
    for level in ("province", "grassroots"):
        with pytest.raises(ValidationFailed) as exc:
            domain.check_union_parent({"level": level})
        assert "parent_id" in exc.value.errors
    domain.check_joinable({"level": "grassroots"})
    with pytest.raises(ValidationFailed):
        domain.check_joinable({"level": "county"})


def test_scopes():
    domain.require_scope(ADMIN_51, "5101040001")
    domain.require_scope(ADMIN_5101, "510104")
    domain.require_scope(ADMIN_510104, "5101040001")
    for actor, code in ((ADMIN_5101, "5103000001"), (ADMIN_510104, "5101050001"), (ADMIN_510104, "510100")):
        with pytest.raises(Forbidden) as exc:
            domain.require_scope(actor, code)
        assert exc.value.code == "OUT_OF_SCOPE"
    with pytest.raises(Forbidden):
        domain.require_scope(MEMBER, "51")
    assert domain.scope_of({"role": "union_admin", "scope": "510100"}) == "5101"


def test_account_scope_rules():
    known = lambda code: code in ("51", "5101", "510104", "5101040001")  # noqa: E731
    assert domain.account_scope(ADMIN_51, {"role": "union_admin", "org_code": "510100"}, known) == "5101"
    assert domain.account_scope(ADMIN_5101, {"role": "union_admin", "org_code": "5101040001"}, known) == "5101040001"
    with pytest.raises(Forbidden):
        domain.account_scope(ADMIN_5101, {"role": "union_admin", "org_code": "51"}, known)
    with pytest.raises(ValidationFailed):
        domain.account_scope(ADMIN_51, {"role": "union_admin", "org_code": "5199"}, known)
    assert domain.account_scope(ADMIN_5101, {"role": "merchant", "merchant_id": "m1"}, known) is None
    assert domain.account_scope(ADMIN_51, {"role": "integrator"}, known) is None
    with pytest.raises(Forbidden):
        domain.account_scope(ADMIN_5101, {"role": "integrator"}, known)


def test_passwords_are_salted_and_checked():
    h1, h2 = domain.hash_password("correct horse"), domain.hash_password("correct horse")
    assert h1 != h2 and h1.startswith("scrypt$") and "correct" not in h1
    assert domain.verify_password("correct horse", h1)
    assert not domain.verify_password("correct horsE", h1)
    assert not domain.verify_password("anything", None)
    assert not domain.verify_password("anything", "garbage")


def test_login_codes():
    codes = {domain.new_otp() for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in codes) and len(codes) > 150
    key = domain.phone_key("13812345678")
    assert key == domain.phone_key("13812345678") != domain.phone_key("13812345679")
    assert "13812345678" not in key
    h = domain.otp_hash(key, "123456")
    assert domain.same_code(h, key, "123456")
    assert not domain.same_code(h, key, "123457")
    assert not domain.same_code(h, domain.phone_key("13812345679"), "123456")
    assert not domain.same_code(None, key, "123456")


def test_cursor_round_trip_and_malformed():
    assert domain.decode_cursor(domain.encode_cursor("mbr_65f0")) == "mbr_65f0"
    assert domain.decode_cursor(None) is None
    for bad in ("!!!", "a", "\u00e9t\u00e9", "AA"):
        with pytest.raises(ValidationFailed) as exc:
            domain.decode_cursor(bad)
        assert "cursor" in exc.value.errors


def test_page():
    rows = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    p = domain.page(rows, 2, lambda r: r["id"])
    assert p["items"] == rows[:2] and domain.decode_cursor(p["next_cursor"]) == "b"
    assert domain.page(rows, 3, lambda r: r["id"])["next_cursor"] is None


def test_member_view_never_has_the_id_number():
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    m = {"_id": "mbr_1", "user_id": "usr_1", "union_id": "un_5101040001", "union_code": "5101040001",
         "region_code": "510104", "status": "active", "occupation_group": "courier", "name": "张三",
         "id_hash": "h", "id_enc": crypto.encrypt("510104198001011236", "resident-id"),
         "id_masked": "5101**********1236", "phone_masked": "138****5678", "card_no": "SC202600000001",
         "joined_at": now, "created_at": now}
    view = domain.member_view(m)
    assert view["id_number_masked"] == "5101**********1236" and view["joined_at"] == "2026-01-02T03:04:05.000Z"
    assert "510104198001011236" not in str(view) and "id_enc" not in view and "id_hash" not in view
    data = domain.joined_data(m, "13812345678")
    assert data["phone_masked"] == "138****5678" and "phone_sealed" not in data  # notify asks by RPC
    assert data["name_masked"] == "张*"
    assert "510104198001011236" not in str(data) and "13812345678" not in str(data)
    from unionhub_kit import catalog
    assert catalog.MemberJoined().validate(data) == {}
    assert events.build("membership", "member_joined", data)["data"] == data
    import pytest
    with pytest.raises(ValueError):  # no event carries a phone, whole or sealed
        events.build("membership", "member_joined", dict(data, phone_sealed="gAAAA..."))


def test_fingerprint_is_keyed_and_stable():
    a = domain.fingerprint({"id_number": "510104198001011236", "x": 1})
    assert a == domain.fingerprint({"x": 1, "id_number": "510104198001011236"})
    assert a != domain.fingerprint({"id_number": "510104198001011236", "x": 2})
    assert "510104198001011236" not in a


def test_mask_name():
    assert domain.mask_name("张三丰") == "张**"
    assert domain.mask_name(None) is None

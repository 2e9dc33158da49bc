"""Membership through the gateway, every process started as `make run` starts them: the walk-through of the README
(code -> token -> unions -> 建会 -> join -> approve -> profile -> welcome -> transfer -> leave and erase), the staff
routes, and the bad input each route must refuse with a problem document (and nothing half-written)."""
import json
import time
import uuid

import jwt
import requests

from support import client
from support.client import (admin_token, auth, create_union, join, member_token, new_id_number, new_member,
                            new_phone, new_uscc, problem, request_otp, staff_token, union_by_code)
from support.stack import wait_for
from unionhub_kit import ids


def get(stack, path, token=None, **params):
    return requests.get(stack.url + path, headers=auth(token) if token else {}, params=params, timeout=15)


def post(stack, path, body=None, token=None, headers=None):
    h = dict(auth(token) if token else {}, **(headers or {}))
    return requests.post(stack.url + path, json=body, headers=h, timeout=15)


def user_of(token):
    return jwt.decode(token, options={"verify_signature": False})["sub"]


def members_of(stack, token):
    return stack.db("membership").members.count_documents({"user_id": user_of(token)})


def join_body(union_id, **kw):
    return dict({"name": "王五", "id_number": new_id_number(), "union_id": union_id, "employer": "蜀道快递有限公司",
                 "occupation_group": "courier", "consent": True}, **kw)


def wait_for_notification(stack, token, category="membership", timeout=10):
    deadline = time.time() + timeout
    while True:
        r = get(stack, "/api/v1/members/me/notifications", token)
        items = r.json().get("items", []) if r.status_code == 200 else []
        found = [n for n in items if n.get("category") == category]
        if found:
            return found
        assert time.time() < deadline, "no %s notification within %ss: %s %s" % (category, timeout, r.status_code,
                                                                                  r.text[:300])
        time.sleep(0.2)


def test_walk_through(stack):
    # 1-2. a login code by SMS, exchanged for a token
    phone = new_phone()
    code = request_otp(stack, phone)
    r = post(stack, "/api/v1/auth/token", {"phone": phone, "code": code})
    assert r.status_code == 200, r.text
    member = r.json()["access_token"]

    # 3. the seeded organisations exist; a union admin creates a grassroots union (建会)
    province = get(stack, "/api/v1/unions", level="province").json()["items"]
    assert [u["code"] for u in province] == ["510000"]
    prefectures = get(stack, "/api/v1/unions", parent_code="510000", limit=100).json()
    assert len(prefectures["items"]) == 21 and prefectures["next_cursor"] is None
    counties, cursor = [], None
    while True:
        page = get(stack, "/api/v1/unions", level="county", limit=50, **({"cursor": cursor} if cursor else {})).json()
        counties += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(counties) == 183 and len({u["id"] for u in counties}) == 183
    jinjiang = union_by_code(stack, "510104")
    assert jinjiang["name"] == "锦江区总工会" and jinjiang["level"] == "county"
    admin = admin_token(stack)
    code_ = new_uscc()
    r = post(stack, "/api/v1/unions", {"name": "锦江区快递行业工会", "parent_id": jinjiang["id"], "uscc": code_,
                                       "auto_approve": False}, admin)
    assert r.status_code == 201, r.text
    union = r.json()
    assert union["code"].startswith("510104") and len(union["code"]) == 10 and union["level"] == "grassroots"
    assert get(stack, "/api/v1/unions", parent_code="510104").json()["items"][0]["parent_id"] == jinjiang["id"]

    # 4. join: pending in a union that reviews
    id_number = new_id_number()
    r = post(stack, "/api/v1/members", join_body(union["id"], id_number=id_number), member)
    assert r.status_code == 201, r.text
    joined = r.json()
    assert joined["status"] == "pending" and not joined.get("card_no")

    # 5. the admin finds and approves it; a card number is issued
    pending = get(stack, "/api/v1/admin/members", admin, union_id=union["id"], status="pending").json()["items"]
    assert [m["id"] for m in pending] == [joined["id"]] and id_number not in json.dumps(pending)
    request_id = "walk-%s" % uuid.uuid4().hex
    tap = client.EventTap(stack.env["AMQP_URI"], "membership", "member_joined")
    r = post(stack, "/api/v1/admin/members/%s/approve" % joined["id"], token=admin,
             headers={"X-Request-Id": request_id})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == request_id, r.text
    approved = r.json()
    assert approved["status"] == "active" and approved["card_no"].startswith("SC")
    event = wait_for(lambda: tap.messages(member_id=joined["id"]), what="member_joined")[0]
    tap.close()
    assert event["requestid"] == request_id  # the request id travelled through RPC into the event
    assert id_number not in json.dumps(event)

    # 6. the profile, masked; a welcome in the inbox
    r = get(stack, "/api/v1/members/me", member)
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["id"] == joined["id"] and me["status"] == "active" and me["card_no"] == approved["card_no"]
    assert me["id_number_masked"] == ids.mask_id_number(id_number) and me["phone_masked"] == ids.mask_phone(phone)
    assert me["union_id"] == union["id"] and me["occupation_group"] == "courier" and me["joined_at"]
    assert id_number not in r.text and phone not in r.text
    wait_for_notification(stack, member)

    # 7. transfer to a union that approves at once, then leave, erasing personal data
    other = create_union(stack, admin, parent_code="510105", auto_approve=True)
    r = post(stack, "/api/v1/members/me/transfers", {"to_union_id": other["id"]}, member)
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    assert get(stack, "/api/v1/members/me", member).json()["union_id"] == other["id"]
    r = requests.delete(stack.url + "/api/v1/members/me", params={"erase": "true"}, headers=auth(member), timeout=15)
    assert r.status_code == 204 and r.content == b""
    r = get(stack, "/api/v1/members/me", member)  # erasure ends every token of the member at once
    assert r.status_code == 401 and r.json()["code"] == "TOKEN_REVOKED", r.text
    stored = stack.db("membership").members.find_one({"_id": joined["id"]})
    assert stored["status"] == "left" and "name" not in stored and "id_masked" not in stored
    assert "id_hash" not in stored and "id_enc" not in stored and "employer" not in stored
    assert "phone_enc" not in stack.db("membership").users.find_one({"_id": user_of(member)})


def test_pending_transfer_is_approved_by_the_receiving_union(stack):
    admin = admin_token(stack)
    token, joined, _ = new_member(stack)
    qingyang = create_union(stack, admin, parent_code="510105", auto_approve=False)
    r = post(stack, "/api/v1/members/me/transfers", {"to_union_id": qingyang["id"]}, token)
    assert r.status_code == 202 and r.json()["status"] == "pending", r.text
    transfer = r.json()
    problem(post(stack, "/api/v1/members/me/transfers", {"to_union_id": qingyang["id"]}, token), 409,
            "TRANSFER_PENDING")
    jinjiang_admin = staff_token(stack, admin, "e2e.jj.%s" % uuid.uuid4().hex[:6], "union_admin", org_code="510104")
    qingyang_admin = staff_token(stack, admin, "e2e.qy.%s" % uuid.uuid4().hex[:6], "union_admin", org_code="510105")
    problem(post(stack, "/api/v1/admin/transfers/%s/approve" % transfer["id"], token=jinjiang_admin), 403,
            "OUT_OF_SCOPE")
    listed = get(stack, "/api/v1/admin/transfers", qingyang_admin, status="pending").json()["items"]
    assert transfer["id"] in [t["id"] for t in listed]
    r = post(stack, "/api/v1/admin/transfers/%s/approve" % transfer["id"], token=qingyang_admin)
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    assert get(stack, "/api/v1/members/me", token).json()["union_id"] == qingyang["id"]
    problem(post(stack, "/api/v1/admin/transfers/%s/approve" % transfer["id"], token=qingyang_admin), 409,
            "NOT_PENDING")


def test_join_refusals_write_nothing(stack):
    admin = admin_token(stack)
    token = member_token(stack)
    union = create_union(stack, admin, auto_approve=True)
    url = "/api/v1/members"
    cases = [
        (join_body(union["id"], id_number="510104198001011235"), "id_number"),  # wrong check character
        (join_body(union["id"], id_number=ids.make_resident_id(birth="19800230")), "id_number"),  # no such day
        (join_body(union["id"], id_number=new_id_number(min_age=10, max_age=14)), "id_number"),  # under 16
        (join_body(union["id"], consent=False), "consent"),
        ({k: v for k, v in join_body(union["id"]).items() if k != "consent"}, "consent"),
        (join_body(union["id"], consent="yes"), "consent"),
        (join_body(union["id"], occupation_group="astronaut"), "occupation_group"),
        (join_body(union["id"], name=123), "name"),
        (join_body(union["id"], hobby="chess"), "hobby"),
        ({k: v for k, v in join_body(union["id"]).items() if k != "name"}, "name"),
    ]
    for body, field in cases:
        doc = problem(post(stack, url, body, token), 400, "VALIDATION_ERROR")
        assert field in doc["errors"], doc
        assert body.get("id_number", "-") not in json.dumps(doc)
    problem(requests.post(stack.url + url, data="{", headers=dict(auth(token), **{"Content-Type":
                                                                                  "application/json"}),
                          timeout=15), 400, "MALFORMED_JSON")
    problem(post(stack, url, [join_body(union["id"])], token), 400, "VALIDATION_ERROR")
    problem(post(stack, url, join_body("un_5101049999"), token), 404, "NOT_FOUND")
    problem(post(stack, url, join_body(union_by_code(stack, "510104")["id"]), token), 400, "VALIDATION_ERROR")
    problem(post(stack, url, join_body(union["id"]), admin), 403, "FORBIDDEN")
    problem(post(stack, url, join_body(union["id"])), 401, "UNAUTHORIZED")
    assert members_of(stack, token) == 0


def test_one_membership_per_person(stack):
    first, joined, _ = new_member(stack)
    stored_before = stack.db("membership").members.count_documents({})
    number = new_id_number()
    other = member_token(stack)
    join(stack, other, id_number=number)
    third = member_token(stack)
    problem(post(stack, "/api/v1/members", join_body(joined["union_id"], id_number=number), third), 409,
            "ALREADY_MEMBER")
    problem(post(stack, "/api/v1/members", join_body(joined["union_id"]), first), 409, "ALREADY_MEMBER")
    assert members_of(stack, third) == 0 and members_of(stack, first) == 1
    assert stack.db("membership").members.count_documents({}) == stored_before + 1


def test_join_with_idempotency_key(stack):
    token = member_token(stack)
    body = join_body(create_union(stack, auto_approve=True)["id"])
    key = {"Idempotency-Key": "join-%s" % uuid.uuid4().hex}
    first = post(stack, "/api/v1/members", body, token, key)
    again = post(stack, "/api/v1/members", body, token, key)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert first.json()["status"] == "active" and members_of(stack, token) == 1
    problem(post(stack, "/api/v1/members", body, token, {"Idempotency-Key": "bad key!"}), 400, "VALIDATION_ERROR")


def test_admin_scope_and_review(stack):
    admin = admin_token(stack)
    zigong_admin = staff_token(stack, admin, "e2e.zg.%s" % uuid.uuid4().hex[:6], "union_admin", org_code="510300")
    union = create_union(stack, admin, auto_approve=False)
    token = member_token(stack)
    r = post(stack, "/api/v1/members", join_body(union["id"]), token)
    assert r.status_code == 201, r.text
    member_id = r.json()["id"]
    problem(post(stack, "/api/v1/admin/members/%s/approve" % member_id, token=zigong_admin), 403, "OUT_OF_SCOPE")
    problem(post(stack, "/api/v1/admin/members/%s/reject" % member_id, {"reason": "x"}, zigong_admin), 403,
            "OUT_OF_SCOPE")
    problem(get(stack, "/api/v1/admin/members", zigong_admin, union_id=union["id"]), 403, "OUT_OF_SCOPE")
    assert member_id not in json.dumps(get(stack, "/api/v1/admin/members", zigong_admin).json())
    problem(post(stack, "/api/v1/admin/members/mbr_nope/approve", token=admin), 404, "NOT_FOUND")
    problem(post(stack, "/api/v1/admin/members/%s/approve" % member_id, token=token), 403, "FORBIDDEN")
    assert stack.db("membership").members.find_one({"_id": member_id})["status"] == "pending"
    problem(post(stack, "/api/v1/admin/members/%s/reject" % member_id, {}, admin), 400, "VALIDATION_ERROR")
    r = post(stack, "/api/v1/admin/members/%s/reject" % member_id, {"reason": "不在本单位工作"}, admin)
    assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
    problem(post(stack, "/api/v1/admin/members/%s/approve" % member_id, token=admin), 409, "NOT_PENDING")
    assert get(stack, "/api/v1/members/me", token).json()["status"] == "rejected"


def test_union_creation_refusals(stack):
    admin = admin_token(stack)
    chengdu = staff_token(stack, admin, "e2e.cd.%s" % uuid.uuid4().hex[:6], "union_admin", org_code="5101")
    unions = stack.db("membership").unions
    before = unions.count_documents({})
    jinjiang = union_by_code(stack, "510104")
    body = {"name": "测试工会", "parent_id": jinjiang["id"], "uscc": "91512081MA62K0260F", "auto_approve": True}
    assert "uscc" in problem(post(stack, "/api/v1/unions", body, admin), 400, "VALIDATION_ERROR")["errors"]
    body["uscc"] = new_uscc()
    problem(post(stack, "/api/v1/unions", dict(body, parent_id=union_by_code(stack, "510300")["id"]), chengdu), 403,
            "OUT_OF_SCOPE")
    problem(post(stack, "/api/v1/unions", dict(body, parent_id=union_by_code(stack, "510000")["id"]), admin), 400,
            "VALIDATION_ERROR")
    problem(post(stack, "/api/v1/unions", dict(body, parent_id="un_999999"), admin), 404, "NOT_FOUND")
    problem(post(stack, "/api/v1/unions", dict(body, auto_approve="true"), admin), 400, "VALIDATION_ERROR")
    problem(post(stack, "/api/v1/unions", body, member_token(stack)), 403, "FORBIDDEN")
    assert unions.count_documents({}) == before
    assert post(stack, "/api/v1/unions", body, chengdu).status_code == 201
    problem(post(stack, "/api/v1/unions", dict(body, name="另一个工会"), admin), 409, "USCC_TAKEN")
    assert unions.count_documents({}) == before + 1


def test_lists_and_statistics(stack):
    admin = admin_token(stack)
    union = create_union(stack, admin, parent_code="510300", auto_approve=True)
    for group in ("truck_driver", "truck_driver", "care_worker"):
        join(stack, member_token(stack), union_id=union["id"], occupation_group=group)
    zigong = staff_token(stack, admin, "e2e.zgs.%s" % uuid.uuid4().hex[:6], "union_admin", org_code="510300")
    page = get(stack, "/api/v1/admin/members", zigong, union_id=union["id"], limit=2).json()
    rest = get(stack, "/api/v1/admin/members", zigong, union_id=union["id"], cursor=page["next_cursor"]).json()
    assert len(page["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    problem(get(stack, "/api/v1/admin/members", zigong, cursor="@@not-a-cursor@@"), 400, "VALIDATION_ERROR")
    problem(get(stack, "/api/v1/admin/members", zigong, limit=0), 400, "VALIDATION_ERROR")
    problem(get(stack, "/api/v1/admin/members", zigong, colour="red"), 400, "VALIDATION_ERROR")
    stats = get(stack, "/api/v1/admin/stats/members", zigong, group_by="occupation_group").json()
    counts = {i["key"]: i["count"] for i in stats["items"]}
    assert counts.get("truck_driver", 0) >= 2 and counts.get("care_worker", 0) >= 1
    by_pref = get(stack, "/api/v1/admin/stats/members", admin, group_by="prefecture").json()
    assert {i["key"] for i in by_pref["items"]} >= {"510300"}
    assert [i["key"] for i in get(stack, "/api/v1/admin/stats/members", zigong).json()["items"]] == ["510300"]
    problem(get(stack, "/api/v1/admin/stats/members", zigong, group_by="planet"), 400, "VALIDATION_ERROR")
    problem(get(stack, "/api/v1/unions", level="galaxy"), 400, "VALIDATION_ERROR")
    problem(get(stack, "/api/v1/unions/un_nope"), 404, "NOT_FOUND")


def test_replicas_starting_together_seed_once(make_stack):
    s = make_stack(replicas={"membership": 3})
    db = s.db("membership")
    assert db.unions.count_documents({}) == 205
    assert db.accounts.count_documents({"username": "admin"}) == 1
    token, joined, _ = new_member(s)
    assert joined["status"] == "active"
    assert get(s, "/api/v1/members/me", token).json()["card_no"] == joined["card_no"]

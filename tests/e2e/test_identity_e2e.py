"""Identity through the gateway, every process started as `make run` starts them: login codes, tokens, accounts,
and the bad input each route must refuse with a problem document (and nothing written)."""
import json
import os

import jwt
import requests

from services.membership import domain
from support.client import (ADMIN_PASSWORD, admin_token, auth, member_token, new_phone, new_uscc, otp_code, problem,
                            request_otp, staff_token)
from unionhub_kit import tokens


def post(stack, path, body=None, token=None, **kw):
    headers = auth(token) if token else {}
    return requests.post(stack.url + path, json=body, headers=headers, timeout=15, **kw)


def process_logs(stack):
    """The lines every process logged (not the SMS sink file, which is the development phone)."""
    lines = []
    for name in os.listdir(stack.log_dir):
        if name.endswith(".log"):
            with open(os.path.join(stack.log_dir, name), encoding="utf-8", errors="replace") as f:
                lines += f.read().splitlines()
    return lines


def otp_record(stack, phone):
    return stack.db("membership").otps.find_one({"_id": domain.phone_key(phone)})


def test_login_with_a_code(stack):
    phone = new_phone()
    before = len(stack.sms_outbox())
    r = post(stack, "/api/v1/auth/otp", {"phone": phone})
    assert r.status_code == 202 and r.json() == {"expires_in": 300}
    code = otp_code(stack, phone, after=before)
    assert not [line for line in process_logs(stack) if code in line and ("sms" in line.lower() or "otp" in line)]
    problem(post(stack, "/api/v1/auth/otp", {"phone": phone}), 429, "RATE_LIMITED")
    wrong = "%06d" % ((int(code) + 1) % 10 ** 6)
    r = post(stack, "/api/v1/auth/token", {"phone": phone, "code": wrong})
    problem(r, 401, "INVALID_CODE")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = post(stack, "/api/v1/auth/token", {"phone": phone, "code": code})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["role"] == "member" and body["expires_in"] > 0
    assert tokens.verify(body["access_token"])["role"] == "member"
    me = requests.get(stack.url + "/api/v1/members/me", headers=auth(body["access_token"]), timeout=15)
    problem(me, 404, "NOT_FOUND")  # logged in, not a member yet
    problem(post(stack, "/api/v1/auth/token", {"phone": phone, "code": code}), 401, "INVALID_CODE")  # used up


def test_sixth_try_of_a_code_fails_even_when_right(stack):
    phone = new_phone()
    code = request_otp(stack, phone)
    wrong = "%06d" % ((int(code) + 1) % 10 ** 6)
    for _ in range(5):
        problem(post(stack, "/api/v1/auth/token", {"phone": phone, "code": wrong}), 401, "INVALID_CODE")
    problem(post(stack, "/api/v1/auth/token", {"phone": phone, "code": code}), 401, "INVALID_CODE")
    assert otp_record(stack, phone)["tries"] == 5


def test_bad_code_requests_write_nothing(stack):
    phone = new_phone()
    url = stack.url + "/api/v1/auth/otp"
    json_ = {"Content-Type": "application/json"}
    problem(requests.post(url, data="{not json", headers=json_, timeout=15), 400, "MALFORMED_JSON")
    problem(requests.post(url, data=json.dumps([phone]), headers=json_, timeout=15), 400, "VALIDATION_ERROR")
    problem(requests.post(url, data=json.dumps(phone), headers=json_, timeout=15), 400, "VALIDATION_ERROR")
    problem(requests.post(url, data="x" * 70000, headers=json_, timeout=15), 413, "PAYLOAD_TOO_LARGE")
    assert "phone" in problem(post(stack, "/api/v1/auth/otp", {}), 400, "VALIDATION_ERROR")["errors"]
    assert "phone" in problem(post(stack, "/api/v1/auth/otp", {"phone": int(phone)}), 400,
                              "VALIDATION_ERROR")["errors"]
    for bad in ("12812345678", "1381234567", "+8613812345678", "23812345678"):
        doc = problem(post(stack, "/api/v1/auth/otp", {"phone": bad}), 400, "VALIDATION_ERROR")
        assert "mainland mobile" in doc["errors"]["phone"][0]
    doc = problem(post(stack, "/api/v1/auth/otp", {"phone": phone, "email": "a@b.c"}), 400, "VALIDATION_ERROR")
    assert "email" in doc["errors"]
    assert otp_record(stack, phone) is None
    assert not [m for m in stack.sms_outbox() if m.get("to") == phone]


def test_bad_token_requests(stack):
    problem(post(stack, "/api/v1/auth/token", {"phone": new_phone()}), 400, "VALIDATION_ERROR")
    problem(post(stack, "/api/v1/auth/token", {"phone": new_phone(), "code": "12ab56"}), 400, "VALIDATION_ERROR")
    problem(post(stack, "/api/v1/auth/token", {"username": "admin", "password": ADMIN_PASSWORD,
                                               "phone": new_phone(), "code": "123456"}), 400, "VALIDATION_ERROR")
    problem(post(stack, "/api/v1/auth/token", {"phone": new_phone(), "code": "123456"}), 401, "INVALID_CODE")


def test_staff_login_and_accounts(stack):
    problem(post(stack, "/api/v1/auth/token", {"username": "admin", "password": "not-the-password"}), 401,
            "INVALID_CREDENTIALS")
    problem(post(stack, "/api/v1/auth/token", {"username": "nobody-here", "password": ADMIN_PASSWORD}), 401,
            "INVALID_CREDENTIALS")
    admin = admin_token(stack)
    claims = tokens.verify(admin)
    assert claims["role"] == "union_admin" and claims["scope"] == "51"
    chengdu = staff_token(stack, admin, "e2e.chengdu", "union_admin", org_code="510100")
    assert tokens.verify(chengdu)["scope"] == "5101"
    r = post(stack, "/api/v1/admin/accounts", {"username": "e2e.zigong", "password": "Zigong-Passw0rd",
                                               "role": "union_admin", "org_code": "510300"}, chengdu)
    problem(r, 403, "OUT_OF_SCOPE")
    r = post(stack, "/api/v1/merchants", {"name": "锦江面馆", "uscc": new_uscc(), "region_code": "510104"}, admin)
    assert r.status_code == 201, r.text
    merchant_id = r.json()["id"]
    r = post(stack, "/api/v1/admin/accounts", {"username": "e2e.chengdu", "password": "Another-Passw0rd",
                                               "role": "merchant", "merchant_id": merchant_id}, admin)
    problem(r, 409, "USERNAME_TAKEN")
    doc = problem(post(stack, "/api/v1/admin/accounts", {"username": "e2e.shop", "password": "Shop-Passw0rd",
                                                         "role": "merchant"}, admin), 400, "VALIDATION_ERROR")
    assert "merchant_id" in doc["errors"]
    shop = staff_token(stack, admin, "e2e.shop", "merchant", merchant_id=merchant_id)
    assert tokens.verify(shop)["merchant_id"] == merchant_id
    problem(post(stack, "/api/v1/admin/accounts", {"username": "e2e.x", "password": "Xxxxx-Passw0rd",
                                                   "role": "integrator"}, shop), 403, "FORBIDDEN")
    accounts = stack.db("membership").accounts
    assert accounts.count_documents({"username": {"$in": ["e2e.zigong", "e2e.x"]}}) == 0
    assert "Shop-Passw0rd" not in json.dumps(accounts.find_one({"username": "e2e.shop"}), default=str)


def test_account_creation_is_idempotent_with_a_key(stack):
    admin = admin_token(stack)
    body = {"username": "e2e.integrator", "password": "Integr-Passw0rd", "role": "integrator"}
    headers = dict(auth(admin), **{"Idempotency-Key": "acct-e2e-1"})
    first = requests.post(stack.url + "/api/v1/admin/accounts", json=body, headers=headers, timeout=15)
    again = requests.post(stack.url + "/api/v1/admin/accounts", json=body, headers=headers, timeout=15)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    problem(requests.post(stack.url + "/api/v1/admin/accounts", json=dict(body, username="e2e.other"),
                          headers=headers, timeout=15), 422, "IDEMPOTENCY_KEY_REUSED")


def test_no_forged_or_expired_token_gets_in(stack):
    me = stack.url + "/api/v1/members/me"
    problem(requests.get(me, timeout=15), 401, "UNAUTHORIZED")
    problem(requests.get(me, headers={"Authorization": "Basic abc"}, timeout=15), 401, "UNAUTHORIZED")
    forged = jwt.encode({"sub": "usr_x", "role": "member", "iss": "unionhub", "iat": 1, "exp": 4102444800},
                        "not-the-key", algorithm="HS256")
    problem(requests.get(me, headers=auth(forged), timeout=15), 401, "INVALID_TOKEN")
    unsigned = jwt.encode({"sub": "usr_x", "role": "union_admin", "scope": "51", "iss": "unionhub", "iat": 1,
                           "exp": 4102444800}, None, algorithm="none")
    problem(requests.get(stack.url + "/api/v1/admin/members", headers=auth(unsigned), timeout=15), 401,
            "INVALID_TOKEN")
    expired = tokens.issue("usr_x", "member", ttl_seconds=-60)
    problem(requests.get(me, headers=auth(expired), timeout=15), 401, "TOKEN_EXPIRED")
    member = member_token(stack)
    problem(requests.get(stack.url + "/api/v1/admin/members", headers=auth(member), timeout=15), 403, "FORBIDDEN")

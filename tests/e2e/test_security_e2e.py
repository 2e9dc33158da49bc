"""Trust at the edges (issue 10), through the real gateway: scope on accounts and campaigns, hostile input, and the
other defects of the issue, each with a test that failed before its fix."""
import json
import uuid

import requests

from support import builders, client
from support.client import admin_token, auth, post, problem, staff_token
from support.stack import wait_for

COUNTY = "510104"  # Jinjiang, Chengdu
FAR = "510703"  # a county of Mianyang


def county_admin(stack, code=COUNTY):
    return staff_token(stack, admin_token(stack), "ca.%s.%s" % (code, uuid.uuid4().hex[:6]), "union_admin",
                       org_code=code)


def merchant(stack, region):
    return client.new_merchant(stack, region=region)


def employer(stack, region):
    r = post(stack, "/api/v1/employers", admin_token(stack), builders.employer_body(region))
    assert r.status_code == 201, r.text
    return r.json()


# ---- defect 1: scope escape through accounts ------------------------------------------------------------------
def test_accounts_bound_to_merchants_and_employers_keep_to_scope(stack):
    county = county_admin(stack)
    accounts = stack.db("membership").accounts
    for role, field, make in (("merchant", "merchant_id", merchant), ("employer", "employer_id", employer)):
        far, near = make(stack, FAR), make(stack, COUNTY)
        name = "bound.%s.%s" % (role, uuid.uuid4().hex[:6])
        body = {"username": name, "password": "Bound-Passw0rd-1", "role": role}
        problem(post(stack, "/api/v1/admin/accounts", county, dict(body, **{field: far["id"]})), 403, "OUT_OF_SCOPE")
        problem(post(stack, "/api/v1/admin/accounts", county, dict(body, **{field: "%s_%s" % (role[:3], "f" * 24)})),
                404, "NOT_FOUND")
        assert accounts.count_documents({"username": name}) == 0
        r = post(stack, "/api/v1/admin/accounts", county, dict(body, **{field: near["id"]}))
        assert r.status_code == 201, r.text


# ---- defect 2: campaigns for merchants or unions outside scope ------------------------------------------------
def test_campaigns_keep_to_scope_for_merchant_and_unions(stack):
    county = county_admin(stack)
    far_merchant, near_merchant = merchant(stack, FAR), merchant(stack, COUNTY)
    far_union = client.create_union(stack, parent_code=FAR)
    near_union = client.create_union(stack, parent_code=COUNTY)
    campaigns = stack.db("benefits").campaigns
    before = campaigns.count_documents({})
    problem(post(stack, "/api/v1/campaigns", county, builders.campaign_body(far_merchant["id"])), 403, "OUT_OF_SCOPE")
    problem(post(stack, "/api/v1/campaigns", county, builders.campaign_body(near_merchant["id"], eligibility={
        "union_ids": [far_union["id"]]})), 403, "OUT_OF_SCOPE")
    problem(post(stack, "/api/v1/campaigns", county, builders.campaign_body(near_merchant["id"], eligibility={
        "union_ids": ["un_5101049999"]})), 404, "NOT_FOUND")
    assert campaigns.count_documents({}) == before
    r = post(stack, "/api/v1/campaigns", county, builders.campaign_body(near_merchant["id"], eligibility={
        "union_ids": [near_union["id"]]}))
    assert r.status_code == 201, r.text


# ---- defect 5: hostile input ----------------------------------------------------------------------------------
def raw_post(stack, path, data, token=None):
    headers = dict(auth(token) if token else {}, **{"Content-Type": "application/json"})
    return requests.post(stack.url + path, data=data, headers=headers, timeout=30)


def test_hostile_bodies_are_4xx_problem_documents(stack):
    deep = "[" * 1000 + "]" * 1000
    problem(raw_post(stack, "/api/v1/auth/otp", deep), 400, "MALFORMED_JSON")
    problem(raw_post(stack, "/api/v1/auth/otp", '{"phone": %s}' % ("[" * 40 + "]" * 40)), 400, "MALFORMED_JSON")
    lone = '{"username": "\\ud800", "password": "whatever-password"}'
    problem(raw_post(stack, "/api/v1/auth/token", lone), 400, "MALFORMED_JSON")
    problem(raw_post(stack, "/api/v1/auth/otp", '{"phone": NaN}'), 400, "MALFORMED_JSON")
    doc = problem(raw_post(stack, "/api/v1/auth/otp", json.dumps({"phone": {"$gt": ""}})), 400, "VALIDATION_ERROR")
    assert isinstance(doc["errors"]["phone"], list)
    problem(raw_post(stack, "/api/v1/auth/otp", json.dumps({"phone": "1" * 70000})), 413, "PAYLOAD_TOO_LARGE")


def test_errors_is_an_object_or_absent_after_an_rpc_hop(stack):
    """A problem raised in a service (403 here, 404 below) crossed RPC: ``errors`` was the string "None"."""
    doc = problem(post(stack, "/api/v1/admin/accounts", county_admin(stack), {
        "username": "x.%s" % uuid.uuid4().hex[:6], "password": "Zigong-Passw0rd-1", "role": "union_admin",
        "org_code": "510300"}), 403, "OUT_OF_SCOPE")
    assert "errors" not in doc
    doc = problem(requests.get(stack.url + "/api/v1/campaigns/cmp_%s" % ("0" * 24), timeout=30), 404, "NOT_FOUND")
    assert "errors" not in doc


def test_odd_paths_and_methods_are_problem_documents_and_405_says_allow(stack):
    for path in ("/api/v1/campaigns/abc%0A", "/api/v1/jobs/x%0Ay", "/api/v1/campaigns/%00", "/api/v1/unions%0A"):
        r = requests.get(stack.url + path, timeout=30)
        assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/problem+json"), (path, r.text)
    for method in ("TRACE", "PATCH", "CONNECTX", "DELETE"):
        r = requests.request(method, stack.url + "/api/v1/auth/otp", timeout=30)
        doc = problem(r, 405, "METHOD_NOT_ALLOWED")
        assert "POST" in r.headers["Allow"] and doc["status"] == 405
    r = requests.options(stack.url + "/api/v1/auth/otp", timeout=30)
    assert r.status_code == 204 and "POST" in r.headers["Allow"]
    r = requests.request("TRACE", stack.url + "/nowhere", timeout=30)
    problem(r, 404, "NOT_FOUND")


# ---- defect 6: login codes per client address, staff lock-out -------------------------------------------------
def post_from(source, url, body, headers=None):
    """POST from the loopback address ``source`` (127.0.0.x), as a client behind that address would."""
    import http.client
    from urllib.parse import urlparse
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", u.path, json.dumps(body), dict({"Content-Type": "application/json"}, **(headers or {})))
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), json.loads(r.read() or b"null")
    finally:
        conn.close()


def test_login_codes_per_address_and_staff_lockout(make_stack):
    st = make_stack(extra_env={"OTP_PER_ADDRESS_PER_HOUR": "3", "LOGIN_LOCKOUT_SECONDS": "4",
                               "TRUSTED_PROXIES": "127.0.0.2, 10.0.0.0/8"})
    otp = st.url + "/api/v1/auth/otp"
    # 127.0.0.1 is no proxy: its X-Forwarded-For is the client's say-so and is ignored
    for _ in range(3):
        status, _, body = post_from("127.0.0.1", otp, {"phone": client.new_phone()},
                                    {"X-Forwarded-For": "203.0.113.%d" % (uuid.uuid4().int % 250)})
        assert status == 202, body
    status, headers, body = post_from("127.0.0.1", otp, {"phone": client.new_phone()})
    assert status == 429 and body["code"] == "RATE_LIMITED" and 3000 < int(headers["Retry-After"]) <= 3600, body
    # 127.0.0.2 is a trusted proxy: the last address of its X-Forwarded-For is the client
    for _ in range(3):
        status, _, body = post_from("127.0.0.2", otp, {"phone": client.new_phone()},
                                    {"X-Forwarded-For": "127.0.0.1, 198.51.100.7"})
        assert status == 202, body
    status, headers, body = post_from("127.0.0.2", otp, {"phone": client.new_phone()},
                                      {"X-Forwarded-For": "198.51.100.7"})
    assert status == 429 and int(headers["Retry-After"]) > 0, body
    status, _, body = post_from("127.0.0.2", otp, {"phone": client.new_phone()}, {"X-Forwarded-For": "198.51.100.8"})
    assert status == 202, body
    assert len(st.sms_outbox()) == 7  # a refused request sends nothing
    assert "198.51.100" not in json.dumps(list(st.db("membership").otp_clients.find()), default=str)

    # five wrong passwords in a row lock the username: every try meanwhile, right or wrong, from anywhere is a 429
    token = st.url + "/api/v1/auth/token"
    right = {"username": "admin", "password": client.ADMIN_PASSWORD}
    wrong = dict(right, password="not-the-password")
    for _ in range(5):
        status, _, body = post_from("127.0.0.1", token, wrong)
        assert status == 401 and body["code"] == "INVALID_CREDENTIALS", body
    for source in ("127.0.0.1", "127.0.0.2"):
        status, headers, body = post_from(source, token, right, {"X-Forwarded-For": "198.51.100.9"})
        assert status == 429 and body["code"] == "RATE_LIMITED" and 1 <= int(headers["Retry-After"]) <= 4, body
    import time
    time.sleep(4.2)
    status, _, body = post_from("127.0.0.1", token, right)
    assert status == 200 and body["role"] == "union_admin", body
    # a success clears the count: four wrong ones later do not lock
    for _ in range(4):
        assert post_from("127.0.0.1", token, wrong)[0] == 401
    assert post_from("127.0.0.1", token, right)[0] == 200


# ---- defect 4: no personal data on events ---------------------------------------------------------------------
def test_member_joined_carries_no_phone_whole_or_sealed_and_the_sms_still_goes(stack):
    from tests.service.notify_support import Receiver
    integrator = staff_token(stack, admin_token(stack), "integ.%s" % uuid.uuid4().hex[:6], "integrator")
    receiver = Receiver()
    try:
        r = post(stack, "/api/v1/webhooks", integrator, {"url": receiver.url, "event_types": [
            "membership.member_joined"], "secret": "whsec-%s" % uuid.uuid4().hex})
        assert r.status_code == 201, r.text
        _, membership, phone = client.new_member(stack)
        wait_for(lambda: [i for i in range(len(receiver.requests)) if receiver.json(i)["data"]["member_id"] ==
                      membership["id"]])
        body = next(q["body"] for i, q in enumerate(receiver.requests)
                    if receiver.json(i)["data"]["member_id"] == membership["id"]).decode()
        data = json.loads(body)["data"]
        assert "phone_sealed" not in data and phone not in body and data["phone_masked"] == phone[:3] + "****" + \
            phone[-4:]
        # notify asked membership for the phone: the welcome SMS went to it
        wait_for(lambda: [m for m in stack.sms_outbox() if m["to"] == phone and m["template"] == "member_joined"])
        # the event as any subscriber gets it (the relay deletes a published outbox row): no sealed phone either
        sent = json.loads(body)
        assert "phone_sealed" not in sent["data"] and "phone" not in sent["data"]
    finally:
        receiver.close()


# ---- defect 7: tokens end -------------------------------------------------------------------------------------
def login(stack, username, password):
    r = post(stack, "/api/v1/auth/token", body={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def me_status(stack, token, path="/api/v1/admin/members"):
    return requests.get(stack.url + path, headers=auth(token), timeout=30)


def test_access_tokens_are_short_refresh_rotates_and_reuse_ends_the_login(stack):
    import jwt
    name = "rt.%s" % uuid.uuid4().hex[:6]
    staff_token(stack, admin_token(stack), name, "union_admin", org_code=COUNTY, password="Refresh-Passw0rd-1")
    first = login(stack, name, "Refresh-Passw0rd-1")
    claims = jwt.decode(first["access_token"], options={"verify_signature": False})
    assert first["expires_in"] <= 900 and claims["exp"] - claims["iat"] <= 900 and first["refresh_token"]
    r = post(stack, "/api/v1/auth/refresh", body={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"] and second["role"] == "union_admin"
    assert me_status(stack, second["access_token"]).status_code == 200
    # the spent one again: 401, and the whole login ends (the new pair too)
    problem(post(stack, "/api/v1/auth/refresh", body={"refresh_token": first["refresh_token"]}), 401,
            "REFRESH_TOKEN_REUSED")
    problem(post(stack, "/api/v1/auth/refresh", body={"refresh_token": second["refresh_token"]}), 401,
            "INVALID_TOKEN")
    problem(me_status(stack, second["access_token"]), 401, "TOKEN_REVOKED")
    problem(post(stack, "/api/v1/auth/refresh", body={"refresh_token": "ses_x.y"}), 401, "INVALID_TOKEN")
    problem(post(stack, "/api/v1/auth/refresh", body={"refresh_token": 5}), 400, "VALIDATION_ERROR")
    # another login of the same account is untouched
    assert me_status(stack, login(stack, name, "Refresh-Passw0rd-1")["access_token"]).status_code == 200


def test_logout_ends_the_access_and_refresh_token_at_once(stack):
    name = "lo.%s" % uuid.uuid4().hex[:6]
    staff_token(stack, admin_token(stack), name, "union_admin", org_code=COUNTY, password="Logout-Passw0rd-1")
    pair, other = login(stack, name, "Logout-Passw0rd-1"), login(stack, name, "Logout-Passw0rd-1")
    r = post(stack, "/api/v1/auth/logout", pair["access_token"])
    assert r.status_code == 204 and r.content == b""
    problem(me_status(stack, pair["access_token"]), 401, "TOKEN_REVOKED")
    problem(post(stack, "/api/v1/auth/refresh", body={"refresh_token": pair["refresh_token"]}), 401, "INVALID_TOKEN")
    problem(post(stack, "/api/v1/auth/logout"), 401, "UNAUTHORIZED")
    assert me_status(stack, other["access_token"]).status_code == 200  # only that login ended


def test_erasure_and_disabling_end_every_token_of_the_user_at_once(stack):
    import jwt
    from unionhub_kit import tokens
    token, _, phone = client.new_member(stack)
    sub = jwt.decode(token, options={"verify_signature": False})["sub"]
    again = tokens.issue(sub, "member", sid="ses_%s" % uuid.uuid4().hex)  # as another login of the same member
    assert me_status(stack, again, "/api/v1/members/me").status_code == 200
    r = requests.delete(stack.url + "/api/v1/members/me", params={"erase": "true"}, headers=auth(token), timeout=30)
    assert r.status_code == 204, r.text
    for t in (token, again):
        problem(me_status(stack, t, "/api/v1/members/me"), 401, "TOKEN_REVOKED")

    county = county_admin(stack)
    name = "dis.%s" % uuid.uuid4().hex[:6]
    r = post(stack, "/api/v1/admin/accounts", county, {"username": name, "password": "Disable-Passw0rd-1",
                                                       "role": "union_admin", "org_code": COUNTY})
    assert r.status_code == 201, r.text
    account = r.json()
    pair = login(stack, name, "Disable-Passw0rd-1")
    far = county_admin(stack, FAR)
    problem(post(stack, "/api/v1/admin/accounts/%s/disable" % account["id"], far), 403, "OUT_OF_SCOPE")
    problem(post(stack, "/api/v1/admin/accounts/acc_%s/disable" % ("0" * 24), county), 404, "NOT_FOUND")
    r = post(stack, "/api/v1/admin/accounts/%s/disable" % account["id"], county)
    assert r.status_code == 200 and r.json()["disabled"] is True, r.text
    problem(me_status(stack, pair["access_token"]), 401, "TOKEN_REVOKED")
    problem(post(stack, "/api/v1/auth/refresh", body={"refresh_token": pair["refresh_token"]}), 401, "INVALID_TOKEN")
    problem(post(stack, "/api/v1/auth/token", body={"username": name, "password": "Disable-Passw0rd-1"}), 401,
            "INVALID_CREDENTIALS")


def test_a_revocation_made_elsewhere_reaches_the_gateway_within_its_poll(stack):
    """As if through another gateway replica: membership ends the login directly, this gateway learns it by its
    once-a-second look at the revocations."""
    import jwt
    from nameko.standalone.rpc import ClusterRpcProxy
    name = "poll.%s" % uuid.uuid4().hex[:6]
    staff_token(stack, admin_token(stack), name, "union_admin", org_code=COUNTY, password="Poll-Passw0rd-1")
    pair = login(stack, name, "Poll-Passw0rd-1")
    assert me_status(stack, pair["access_token"]).status_code == 200
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    with ClusterRpcProxy({"AMQP_URI": stack.env["AMQP_URI"], "serializer": "json"}) as rpc:
        rpc.membership.logout({"sub": claims["sub"], "role": claims["role"], "sid": claims["sid"]})
    wait_for(lambda: me_status(stack, pair["access_token"]).status_code == 401, timeout=10)


# ---- passwords --------------------------------------------------------------------------------------------------
def test_staff_passwords_follow_the_policy(stack):
    admin = admin_token(stack)
    name = "pw.%s" % uuid.uuid4().hex[:6]
    for password in ("Short-1", name + "-Extra-1", "1234567890", "qwertyuiop", "Password123456!", "iloveyou1234"):
        doc = problem(post(stack, "/api/v1/admin/accounts", admin, {"username": name, "password": password,
                                                                    "role": "union_admin", "org_code": COUNTY}),
                      400, "VALIDATION_ERROR")
        assert "password" in doc["errors"], (password, doc)
    assert stack.db("membership").accounts.count_documents({"username": name}) == 0
    r = post(stack, "/api/v1/admin/accounts", admin, {"username": name, "password": "Lantern-Ferry-Nine",
                                                      "role": "union_admin", "org_code": COUNTY})
    assert r.status_code == 201, r.text
    stored = stack.db("membership").accounts.find_one({"username": name})["password_hash"]
    assert stored.startswith("scrypt$") and "Lantern" not in stored  # memory-hard (scrypt, 16 MiB per hash)

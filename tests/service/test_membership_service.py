"""The membership service in a nameko container on the real broker and store.

A small fake notify container answers ``send_sms`` (recording what it was asked to send); a tap queue bound to
``membership.events`` shows what the outbox really published.
"""
import collections
import datetime
import itertools
import json
import time
import uuid
from datetime import timedelta

import pytest
from kombu import Connection, Queue
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.services import entrypoint_hook

from services.membership import store
from services.membership.service import MembershipService
from support.stack import ADMIN_PASSWORD, wait_for
from unionhub_kit import clock, crypto, ids, tokens, topology
from unionhub_kit.errors import AppError, NotFound

ADMIN = {"sub": "acc_admin", "role": "union_admin", "scope": "51", "merchant_id": None, "employer_id": None}


class FakeNotify:
    name = "notify"
    sent = []

    @rpc
    def send_sms(self, message):
        FakeNotify.sent.append(message)
        return {"ok": True}

    @rpc
    def ping(self):
        return {"service": "notify", "ok": True}


class FakeBenefits:
    """Where merchants lie: ``mer_1`` in Chengdu (510104), ``mer_far`` in Zigong (510302); others are unknown."""
    name = "benefits"
    REGIONS = {"mer_1": "510104", "mer_far": "510302"}

    @rpc
    def get_merchant(self, merchant_id):
        if merchant_id not in self.REGIONS:
            raise NotFound("No merchant has the id %s." % merchant_id)
        return {"id": merchant_id, "region_code": self.REGIONS[merchant_id]}


class FakeJobs:
    """Where employers lie: ``emp_1`` in Chengdu (510104), ``emp_far`` in Zigong (510302)."""
    name = "jobs"
    REGIONS = {"emp_1": "510104", "emp_far": "510302"}

    @rpc
    def get_employer(self, employer_id):
        if employer_id not in self.REGIONS:
            raise NotFound("No such employer.")
        return {"id": employer_id, "region_code": self.REGIONS[employer_id]}


class Tap:
    """Every event published to ``membership.events`` (a queue of this test's own, bound to ``#``)."""

    def __init__(self, amqp_uri):
        self.conn = Connection(amqp_uri)
        self.queue = Queue("tap-%s" % uuid.uuid4().hex[:8], exchange=topology.event_exchange("membership"),
                           routing_key="#", durable=False, auto_delete=False)
        self.bound = self.queue(self.conn.channel())
        self.bound.declare()
        self.seen = []

    def drain(self):
        while True:
            msg = self.bound.get(no_ack=True)
            if msg is None:
                return self.seen
            self.seen.append(json.loads(msg.body) if isinstance(msg.body, (str, bytes)) else msg.body)

    def wait(self, event, subject, timeout=10):
        kind = "org.unionhub.membership.%s.v1" % event
        return wait_for(lambda: next((e for e in self.drain() if e["type"] == kind and e["subject"] == subject), None),
                        timeout, what="%s of %s" % (event, subject))

    def of_type(self, event):
        return [e for e in self.drain() if e["type"] == "org.unionhub.membership.%s.v1" % event]

    def close(self):
        self.conn.close()


class Membership:
    """Calls into the running container, plus what a test needs to set up users."""

    def __init__(self, container, db):
        self.container, self.db = container, db

    def concurrently(self, method, calls):
        """Call ``method`` with every argument tuple at once over the broker (as the gateway would); return the
        results, or the error codes, in order. (``entrypoint_hook`` cannot tell concurrent calls apart.)"""
        with ClusterRpcProxy(self.container.config) as proxy:
            pending = [getattr(proxy.membership, method).call_async(*args) for args in calls]
            out = []
            for p in pending:
                try:
                    out.append(p.result())
                except AppError as exc:
                    out.append(exc.code)
            return out

    def __getattr__(self, method):
        def call(*args):
            with entrypoint_hook(self.container, method) as hook:
                return hook(*args)
        return call

    def member(self, phone=None):
        """A member actor, logged in through a real login code."""
        phone = phone or "139%08d" % (uuid.uuid4().int % 10 ** 8)
        self.request_otp({"phone": phone})
        code = FakeNotify.sent[-1]["params"]["code"]
        claims = tokens.verify(self.issue_token({"phone": phone, "code": code})["access_token"])
        return {"sub": claims["sub"], "role": "member", "scope": None, "merchant_id": None, "employer_id": None}

    def union(self, auto_approve=False, parent_id="un_510104", actor=ADMIN):
        return self.create_union(actor, {"name": "测试工会", "parent_id": parent_id, "uscc": uscc(),
                                         "auto_approve": auto_approve})


def uscc():
    return ids.make_uscc("91510104%09d" % (uuid.uuid4().int % 10 ** 9))


_ID_SEQ = itertools.count(int(time.time() * 1000) % 1000000)


def id_number(birth="19900101"):
    """A resident ID number no other call of this run returns (the sequence part has only 1,000 values: random
    ones collided now and then, and a collision is a real ALREADY_MEMBER)."""
    n = next(_ID_SEQ)
    if birth == "19900101":  # vary the birth date too, so numbers stay distinct beyond 1,000 calls
        day = datetime.date(1990, 1, 1) + datetime.timedelta(days=(n // 1000) % 7000)
        birth = day.strftime("%Y%m%d")
    return ids.make_resident_id("510104", birth, n % 1000)


def join_body(union_id, number=None, **kw):
    return dict({"name": "张三", "id_number": number or id_number(), "union_id": union_id, "employer": "蜀道快递",
                 "occupation_group": "courier", "consent": True}, **kw)


def raises(code, fn, *args):
    with pytest.raises(AppError) as exc:
        fn(*args)
    assert exc.value.code == code, exc.value
    return exc.value


@pytest.fixture
def svc(container_factory, config, db_of, monkeypatch):
    monkeypatch.setenv("UNIONHUB_ADMIN_PASSWORD", ADMIN_PASSWORD)
    FakeNotify.sent = []
    for fake in (FakeNotify, FakeBenefits, FakeJobs):
        container_factory(fake, config).start()
    container = container_factory(MembershipService, config)
    container.start()
    return Membership(container, db_of("membership"))


@pytest.fixture
def tap(config):
    t = Tap(config["AMQP_URI"])
    yield t
    t.close()


# ---- seed -------------------------------------------------------------------------------------------------------
def test_seed_creates_region_unions_and_admin_once(svc, container_factory, config, monkeypatch):
    db = svc.db
    assert db.unions.count_documents({}) == 205
    assert db.unions.count_documents({"level": "prefecture"}) == 21
    assert db.unions.count_documents({"level": "county"}) == 183
    county = db.unions.find_one({"code": "510104"})
    assert county["parent_id"] == "un_510100" and county["level"] == "county" and county["auto_approve"] is False
    admin = db.accounts.find_one({"username": "admin"})
    assert admin["role"] == "union_admin" and admin["scope"] == "51" and ADMIN_PASSWORD not in str(admin)
    # a second replica starting (with another password in its environment) changes nothing
    monkeypatch.setenv("UNIONHUB_ADMIN_PASSWORD", "Another-Passw0rd!")
    again = container_factory(MembershipService, config)
    again.start()
    assert db.unions.count_documents({}) == 205 and db.accounts.count_documents({}) == 1
    assert db.accounts.find_one({"username": "admin"})["password_hash"] == admin["password_hash"]
    token = svc.issue_token({"username": "admin", "password": ADMIN_PASSWORD})
    assert tokens.verify(token["access_token"])["scope"] == "51"


# ---- login codes ------------------------------------------------------------------------------------------------
def test_otp_login_creates_user_with_phone_encrypted(svc):
    assert svc.request_otp({"phone": "13800000001"}) == {"expires_in": 300}
    sms = FakeNotify.sent[-1]
    assert sms["to"] == "13800000001" and sms["template"] == "otp" and len(sms["params"]["code"]) == 6
    stored = svc.db.otps.find_one()
    assert sms["params"]["code"] not in json.dumps(stored, default=str) and "13800000001" not in stored["_id"]
    raises("INVALID_CODE", svc.issue_token, {"phone": "13800000001", "code": "%06d" % (
        (int(sms["params"]["code"]) + 1) % 10 ** 6)})
    answer = svc.issue_token({"phone": "13800000001", "code": sms["params"]["code"]})
    assert answer["token_type"] == "Bearer" and answer["role"] == "member" and answer["expires_in"] > 0
    claims = tokens.verify(answer["access_token"])
    user = svc.db.users.find_one({"_id": claims["sub"]})
    assert claims["role"] == "member" and "13800000001" not in json.dumps(user, default=str)
    assert crypto.decrypt(user["phone_enc"]) == "13800000001" and user["phone_masked"] == "138****0001"
    # the code is used up; the same phone logs in as the same user next time
    raises("INVALID_CODE", svc.issue_token, {"phone": "13800000001", "code": sms["params"]["code"]})
    svc.db.otps.update_one({}, {"$set": {"sent": []}})
    svc.request_otp({"phone": "13800000001"})
    again = svc.issue_token({"phone": "13800000001", "code": FakeNotify.sent[-1]["params"]["code"]})
    assert tokens.verify(again["access_token"])["sub"] == claims["sub"]
    assert svc.db.users.count_documents({}) == 1


def test_code_is_dead_after_five_wrong_tries(svc):
    svc.request_otp({"phone": "13800000002"})
    code = FakeNotify.sent[-1]["params"]["code"]
    wrong = "%06d" % ((int(code) + 1) % 10 ** 6)
    for _ in range(5):
        raises("INVALID_CODE", svc.issue_token, {"phone": "13800000002", "code": wrong})
    raises("INVALID_CODE", svc.issue_token, {"phone": "13800000002", "code": code})  # the sixth try, right code
    assert svc.db.users.count_documents({}) == 0


def test_expired_code_is_refused(svc):
    svc.request_otp({"phone": "13800000003"})
    svc.db.otps.update_one({}, {"$set": {"expires_at": clock.now() - timedelta(seconds=1)}})
    raises("INVALID_CODE", svc.issue_token, {"phone": "13800000003", "code": FakeNotify.sent[-1]["params"]["code"]})


def test_stale_login_code_records_are_purged_and_fresh_ones_kept(svc):
    svc.request_otp({"phone": "13800000005"})
    svc.request_otp({"phone": "13800000006"})
    two_hours_ago = clock.now() - timedelta(hours=2)
    stale_key = svc.db.otps.find_one({"last_sent": {"$exists": True}}, sort=[("_id", 1)])["_id"]
    svc.db.otps.update_one({"_id": stale_key}, {"$set": {"last_sent": two_hours_ago, "sent": [two_hours_ago]}})
    svc.purge_stale_otps()  # the timer's entrypoint, on the running container
    assert svc.db.otps.find_one({"_id": stale_key}) is None and svc.db.otps.count_documents({}) == 1
    svc.purge_stale_otps()  # nothing more to do; the live code still logs in
    fresh = svc.db.otps.find_one()
    assert fresh["code_hash"] and svc.db.otps.count_documents({}) == 1
    assert svc.issue_token({"phone": "13800000006", "code": FakeNotify.sent[-1]["params"]["code"]})["access_token"]


def test_code_never_requested_is_refused(svc):
    raises("INVALID_CODE", svc.issue_token, {"phone": "13800000009", "code": "123456"})


def test_rate_limits_one_a_minute_five_an_hour(svc):
    phone = "13800000004"
    svc.request_otp({"phone": phone})
    raises("RATE_LIMITED", svc.request_otp, {"phone": phone})
    assert len(FakeNotify.sent) == 1

    def minutes_pass(n):
        doc = svc.db.otps.find_one()
        svc.db.otps.update_one({"_id": doc["_id"]}, {"$set": {"sent": [t - timedelta(minutes=n) for t in doc["sent"]]}})
    for _ in range(4):
        minutes_pass(2)
        svc.request_otp({"phone": phone})
    assert len(FakeNotify.sent) == 5
    minutes_pass(2)  # the last was two minutes ago, but five went out within the hour
    raises("RATE_LIMITED", svc.request_otp, {"phone": phone})
    minutes_pass(52)  # now the first of the five is more than an hour old
    svc.request_otp({"phone": phone})
    assert len(FakeNotify.sent) == 6


def test_concurrent_code_requests_send_one(svc):
    results = svc.concurrently("request_otp", [({"phone": "13800000005"},)] * 6)
    assert sorted(map(str, results)) == ["RATE_LIMITED"] * 5 + ["{'expires_in': 300}"]
    assert len(FakeNotify.sent) == 1


def test_sms_failure_does_not_use_up_the_limit(container_factory, config, db_of, monkeypatch):
    monkeypatch.setenv("UNIONHUB_ADMIN_PASSWORD", ADMIN_PASSWORD)
    container = container_factory(MembershipService, config)  # no notify running
    container.start()
    svc = Membership(container, db_of("membership"))
    raises("SERVICE_UNAVAILABLE", svc.request_otp, {"phone": "13800000006"})
    doc = svc.db.otps.find_one()
    assert not [t for t in doc["sent"] if t > store.NEVER] and "code_hash" not in doc
    FakeNotify.sent = []
    container_factory(FakeNotify, config).start()
    assert svc.request_otp({"phone": "13800000006"}) == {"expires_in": 300}


def test_otp_payload_is_validated(svc):
    err = raises("VALIDATION_ERROR", svc.request_otp, {"phone": "12345678901"})
    assert "phone" in err.errors
    raises("VALIDATION_ERROR", svc.request_otp, {"phone": "13800000007", "extra": 1})
    assert svc.db.otps.count_documents({}) == 0 and FakeNotify.sent == []


# ---- staff accounts ---------------------------------------------------------------------------------------------
def test_staff_login_and_accounts_in_scope(svc):
    raises("INVALID_CREDENTIALS", svc.issue_token, {"username": "admin", "password": "wrong-password"})
    raises("INVALID_CREDENTIALS", svc.issue_token, {"username": "nobody", "password": ADMIN_PASSWORD})
    made = svc.create_account(ADMIN, {"username": "cd.admin", "password": "Chengdu-Passw0rd", "role": "union_admin",
                                      "org_code": "510100"})
    assert made["scope"] == "5101" and made["role"] == "union_admin" and "password_hash" not in made
    token = tokens.verify(svc.issue_token({"username": "cd.admin", "password": "Chengdu-Passw0rd"})["access_token"])
    assert token["role"] == "union_admin" and token["scope"] == "5101" and token["sub"] == made["id"]
    chengdu = dict(ADMIN, sub=made["id"], scope="5101")
    raises("OUT_OF_SCOPE", svc.create_account, chengdu, {"username": "zg.admin", "password": "Zigong-Passw0rd",
                                                        "role": "union_admin", "org_code": "510300"})
    raises("OUT_OF_SCOPE", svc.create_account, chengdu, {"username": "integr", "password": "Hooks-Feed-Passw0rd",
                                                        "role": "integrator"})
    raises("USERNAME_TAKEN", svc.create_account, ADMIN, {"username": "cd.admin", "password": "Other-Passw0rd",
                                                         "role": "merchant", "merchant_id": "mer_1"})
    raises("FORBIDDEN", svc.create_account, dict(ADMIN, role="member"), {"username": "x.y.z",
                                                                         "password": "Other-Passw0rd",
                                                                         "role": "integrator"})
    merchant = svc.create_account(chengdu, {"username": "shop1", "password": "Merchant-Passw0rd", "role": "merchant",
                                            "merchant_id": "mer_1"})
    claims = tokens.verify(svc.issue_token({"username": "shop1", "password": "Merchant-Passw0rd"})["access_token"])
    assert claims["role"] == "merchant" and claims["merchant_id"] == "mer_1" and merchant["merchant_id"] == "mer_1"
    # an account bound to a merchant or employer: it must exist and lie in the creator's scope
    for role, field, far, unknown in (("merchant", "merchant_id", "mer_far", "mer_nope"),
                                      ("employer", "employer_id", "emp_far", "emp_nope")):
        body = {"username": "bound.%s" % role, "password": "Bound-Passw0rd", "role": role}
        raises("OUT_OF_SCOPE", svc.create_account, chengdu, dict(body, **{field: far}))
        raises("NOT_FOUND", svc.create_account, ADMIN, dict(body, **{field: unknown}))
    assert svc.db.accounts.count_documents({}) == 3


def test_an_old_password_hash_still_logs_in_and_is_rehashed(svc):
    import hashlib
    salt = b"0123456789abcdef"
    old = "scrypt$%d$%d$%d$%s$%s" % (2 ** 12, 8, 1, salt.hex(), hashlib.scrypt(
        b"Old-Params-Passw0rd", salt=salt, n=2 ** 12, r=8, p=1, dklen=32).hex())
    svc.db.accounts.insert_one({"_id": "acc_old", "username": "old.hash", "role": "union_admin", "scope": "5101",
                                "password_hash": old})
    assert svc.issue_token({"username": "old.hash", "password": "Old-Params-Passw0rd"})["role"] == "union_admin"
    new = svc.db.accounts.find_one({"_id": "acc_old"})["password_hash"]
    assert new != old and new.startswith("scrypt$%d$8$1$" % 2 ** 14)
    assert svc.issue_token({"username": "old.hash", "password": "Old-Params-Passw0rd"})["role"] == "union_admin"


def test_account_idempotency_key(svc):
    body = {"username": "emp1", "password": "Employer-Passw0rd", "role": "employer", "employer_id": "emp_1"}
    first = svc.create_account(ADMIN, body, "key-1")
    assert svc.create_account(ADMIN, body, "key-1") == first
    raises("IDEMPOTENCY_KEY_REUSED", svc.create_account, ADMIN, dict(body, username="emp2"), "key-1")
    assert svc.db.accounts.count_documents({"role": "employer"}) == 1


# ---- unions -----------------------------------------------------------------------------------------------------
def test_create_union_emits_union_created(svc, tap):
    u = svc.union(auto_approve=True)
    assert u["code"] == "5101040001" and u["level"] == "grassroots" and u["parent_id"] == "un_510104"
    assert u["region_code"] == "510104" and u["auto_approve"] is True
    env = tap.wait("union_created", u["id"])
    assert env["data"]["code"] == "5101040001" and env["source"] == "/unionhub/membership"
    assert svc.union()["code"] == "5101040002"
    under_prefecture = svc.union(parent_id="un_510100")
    assert under_prefecture["code"] == "5101000001" and under_prefecture["region_code"] == "510100"


def test_create_union_refusals_write_nothing(svc):
    code = uscc()
    svc.create_union(ADMIN, {"name": "甲工会", "parent_id": "un_510104", "uscc": code, "auto_approve": False})
    before = (svc.db.unions.count_documents({}), svc.db.outbox.count_documents({}))
    raises("USCC_TAKEN", svc.create_union, ADMIN, {"name": "乙工会", "parent_id": "un_510105", "uscc": code,
                                                   "auto_approve": False})
    raises("OUT_OF_SCOPE", svc.union, False, "un_510300", dict(ADMIN, scope="5101"))
    err = raises("VALIDATION_ERROR", svc.union, False, "un_510000")
    assert "parent_id" in err.errors
    raises("NOT_FOUND", svc.union, False, "un_999999")
    err = raises("VALIDATION_ERROR", svc.create_union, ADMIN, {"name": "丙工会", "parent_id": "un_510104",
                                                               "uscc": "91512081MA62K0260F", "auto_approve": False})
    assert "uscc" in err.errors
    assert (svc.db.unions.count_documents({}), svc.db.outbox.count_documents({})) == before
    assert svc.db.unions.find_one({"_id": "un_510105"})["child_seq"] == 0


def test_list_unions_pages_with_cursor(svc):
    first = svc.list_unions({"level": "county", "limit": 100})
    assert len(first["items"]) == 100 and first["next_cursor"]
    second = svc.list_unions({"level": "county", "limit": 100, "cursor": first["next_cursor"]})
    assert len(second["items"]) == 83 and second["next_cursor"] is None
    codes = [u["code"] for u in first["items"] + second["items"]]
    assert codes == sorted(set(codes))
    chengdu = svc.list_unions({"parent_code": "5101", "limit": 100})["items"]
    assert chengdu and all(u["parent_id"] == "un_510100" for u in chengdu)
    assert svc.list_unions({"level": "province"})["items"][0]["code"] == "510000"
    raises("VALIDATION_ERROR", svc.list_unions, {"cursor": "%%%"})
    raises("VALIDATION_ERROR", svc.list_unions, {"level": "galaxy"})


# ---- joining ----------------------------------------------------------------------------------------------------
def test_join_auto_approve_publishes_member_joined_without_id_number(svc, tap):
    union = svc.union(auto_approve=True)
    member = svc.member("13800000010")
    number = id_number()
    got = svc.join(member, join_body(union["id"], number, occupation_group="delivery_rider"))
    assert got["status"] == "active" and got["card_no"].startswith("SC")
    env = tap.wait("member_joined", got["id"])
    data = env["data"]
    assert data["member_id"] == got["id"] and data["user_id"] == member["sub"] and data["card_no"] == got["card_no"]
    assert data["union_code"] == union["code"] and data["region_code"] == "510104"
    assert data["occupation_group"] == "delivery_rider" and data["phone_masked"] == "138****0010"
    assert "phone_sealed" not in data and svc.contact_phone(member["sub"]) == {"phone": "13800000010"}
    raw = json.dumps(env)
    assert number not in raw and number[:17] not in raw and "13800000010" not in raw
    stored = svc.db.members.find_one({"_id": got["id"]})
    assert number not in json.dumps(stored, default=str)
    assert crypto.decrypt(stored["id_enc"], "resident-id") == number
    me = svc.get_me(member)
    assert me["id_number_masked"] == ids.mask_id_number(number) and me["phone_masked"] == "138****0010"
    assert me["status"] == "active" and me["joined_at"] and me["union_id"] == union["id"]


def test_join_pending_then_approve_with_card_number(svc, tap):
    union = svc.union(auto_approve=False)
    member = svc.member()
    got = svc.join(member, join_body(union["id"]))
    assert got["status"] == "pending" and got["card_no"] is None
    assert svc.db.outbox.count_documents({"type": "member_joined"}) == 0
    raises("OUT_OF_SCOPE", svc.approve_member, dict(ADMIN, scope="5103"), got["id"])
    raises("NOT_FOUND", svc.approve_member, ADMIN, "mbr_nope")
    assert svc.db.members.find_one({"_id": got["id"]})["status"] == "pending"
    approved = svc.approve_member(dict(ADMIN, scope="510104"), got["id"])
    assert approved["status"] == "active" and approved["card_no"].startswith("SC")
    env = tap.wait("member_joined", got["id"])
    assert env["data"]["card_no"] == approved["card_no"]
    raises("NOT_PENDING", svc.approve_member, ADMIN, got["id"])
    assert svc.db.outbox.count_documents({"type": "member_joined"}) == 1


def test_card_numbers_are_unique_under_concurrency(svc):
    union = svc.union(auto_approve=True)
    members = [svc.member() for _ in range(6)]
    results = svc.concurrently("join", [(m, join_body(union["id"])) for m in members])
    cards = [r["card_no"] for r in results]
    assert len(set(cards)) == 6 and all(c.startswith("SC") for c in cards)


def test_one_membership_per_person_and_per_user(svc):
    union = svc.union(auto_approve=True)
    number = id_number()
    first = svc.member()
    svc.join(first, join_body(union["id"], number))
    second = svc.member()
    raises("ALREADY_MEMBER", svc.join, second, join_body(union["id"], number))
    raises("ALREADY_MEMBER", svc.join, first, join_body(union["id"]))
    assert svc.db.members.count_documents({}) == 1 and svc.db.outbox.count_documents({"type": "member_joined"}) == 1


def test_concurrent_joins_with_one_id_number_make_one_member(svc):
    union = svc.union(auto_approve=True)
    number = id_number()
    members = [svc.member() for _ in range(5)]
    outcomes = svc.concurrently("join", [(m, join_body(union["id"], number)) for m in members])
    assert sorted(o if isinstance(o, str) else o["status"] for o in outcomes) == ["ALREADY_MEMBER"] * 4 + ["active"]
    assert svc.db.members.count_documents({}) == 1


def test_join_refusals_write_nothing(svc):
    union = svc.union(auto_approve=True)
    member = svc.member()
    raises("NOT_FOUND", svc.join, member, join_body("un_5101049999"))
    err = raises("VALIDATION_ERROR", svc.join, member, join_body("un_510104"))
    assert "union_id" in err.errors
    raises("VALIDATION_ERROR", svc.join, member, join_body(union["id"], consent=False))
    raises("VALIDATION_ERROR", svc.join, member, join_body(union["id"], "510104198001011235"))
    raises("VALIDATION_ERROR", svc.join, member, join_body(union["id"], id_number(
        (clock.now() - timedelta(days=365 * 15)).strftime("%Y%m%d"))))
    raises("FORBIDDEN", svc.join, ADMIN, join_body(union["id"]))
    assert svc.db.members.count_documents({}) == 0 and svc.db.outbox.count_documents({"type": "member_joined"}) == 0


def test_join_idempotency_key(svc):
    union = svc.union(auto_approve=True)
    member = svc.member()
    body = join_body(union["id"])
    first = svc.join(member, body, "join-1")
    assert svc.join(member, body, "join-1") == first
    raises("IDEMPOTENCY_KEY_REUSED", svc.join, member, dict(body, name="李四"), "join-1")
    assert svc.db.members.count_documents({}) == 1 and svc.db.outbox.count_documents({"type": "member_joined"}) == 1


def test_concurrent_repeats_of_one_idempotency_key_join_once(svc):
    union = svc.union(auto_approve=True)
    member = svc.member()
    body = join_body(union["id"])
    results = svc.concurrently("join", [(member, body, "same-key")] * 4)
    assert all(r == results[0] for r in results) and results[0]["status"] == "active"
    assert svc.db.members.count_documents({}) == 1 and svc.db.outbox.count_documents({"type": "member_joined"}) == 1


def test_concurrent_approvals_activate_once(svc):
    union = svc.union(auto_approve=False)
    joined = svc.join(svc.member(), join_body(union["id"]))
    results = svc.concurrently("approve_member", [(ADMIN, joined["id"])] * 4)
    assert sorted(r if isinstance(r, str) else r["status"] for r in results) == ["NOT_PENDING"] * 3 + ["active"]
    assert svc.db.outbox.count_documents({"type": "member_joined"}) == 1


def test_reject_then_apply_again(svc, tap):
    union = svc.union(auto_approve=False)
    member = svc.member()
    number = id_number()
    got = svc.join(member, join_body(union["id"], number))
    rejected = svc.reject_member(ADMIN, got["id"], {"reason": "不在本单位工作"})
    assert rejected["status"] == "rejected"
    env = tap.wait("member_rejected", got["id"])
    assert env["data"] == {"member_id": got["id"], "user_id": member["sub"], "union_id": union["id"],
                           "reason": "不在本单位工作"}
    raises("NOT_PENDING", svc.approve_member, ADMIN, got["id"])
    assert svc.get_me(member)["status"] == "rejected"
    again = svc.join(member, join_body(union["id"], number))
    assert again["status"] == "pending" and svc.get_me(member)["id"] == again["id"]


# ---- transfer and leave -----------------------------------------------------------------------------------------
def test_transfer_pending_then_approved_by_receiving_union(svc, tap):
    home = svc.union(auto_approve=True)
    away = svc.union(auto_approve=False, parent_id="un_510105")
    member = svc.member()
    joined = svc.join(member, join_body(home["id"]))
    t = svc.request_transfer(member, {"to_union_id": away["id"]})
    assert t["status"] == "pending"
    raises("TRANSFER_PENDING", svc.request_transfer, member, {"to_union_id": away["id"]})
    assert svc.get_me(member)["pending_transfer"]["id"] == t["id"]
    listed = svc.list_transfers(dict(ADMIN, scope="510105"), {"status": "pending"})["items"]
    assert [x["id"] for x in listed] == [t["id"]]
    raises("OUT_OF_SCOPE", svc.approve_transfer, dict(ADMIN, scope="510104"), t["id"])  # the sending side
    done = svc.approve_transfer(dict(ADMIN, scope="510105"), t["id"])
    assert done["status"] == "completed"
    env = tap.wait("member_transferred", joined["id"])
    assert env["data"]["union_id"] == away["id"] and env["data"]["from_union_id"] == home["id"]
    assert env["data"]["region_code"] == "510105" and env["data"]["from_union_code"] == home["code"]
    me = svc.get_me(member)
    assert me["union_id"] == away["id"] and me["card_no"] == joined["card_no"] and me["pending_transfer"] is None
    raises("NOT_PENDING", svc.approve_transfer, ADMIN, t["id"])
    raises("SAME_UNION", svc.request_transfer, member, {"to_union_id": away["id"]})


def test_transfer_to_auto_approve_union_completes_at_once(svc, tap):
    home = svc.union(auto_approve=True)
    away = svc.union(auto_approve=True)
    member = svc.member()
    joined = svc.join(member, join_body(home["id"]))
    assert svc.request_transfer(member, {"to_union_id": away["id"]})["status"] == "completed"
    assert tap.wait("member_transferred", joined["id"])["data"]["union_id"] == away["id"]


def test_rejected_transfer_leaves_the_member_where_it_was(svc):
    home = svc.union(auto_approve=True)
    away = svc.union(auto_approve=False, parent_id="un_510300")
    member = svc.member()
    joined = svc.join(member, join_body(home["id"]))
    t = svc.request_transfer(member, {"to_union_id": away["id"]})
    raises("OUT_OF_SCOPE", svc.reject_transfer, dict(ADMIN, scope="5101"), t["id"], {"reason": "x"})
    raises("VALIDATION_ERROR", svc.reject_transfer, ADMIN, t["id"], {})
    done = svc.reject_transfer(dict(ADMIN, scope="5103"), t["id"], {"reason": "名额已满"})
    assert done["status"] == "rejected" and done["reason"] == "名额已满"
    me = svc.get_me(member)
    assert me["union_id"] == home["id"] and me["pending_transfer"] is None
    assert svc.db.outbox.count_documents({"type": "member_transferred"}) == 0
    assert svc.request_transfer(member, {"to_union_id": away["id"]})["status"] == "pending"  # may ask again
    assert joined["status"] == "active"


def test_transfer_needs_an_active_membership(svc):
    pending_union = svc.union(auto_approve=False)
    member = svc.member()
    svc.join(member, join_body(pending_union["id"]))
    raises("NOT_ACTIVE", svc.request_transfer, member, {"to_union_id": svc.union()["id"]})
    raises("NOT_FOUND", svc.request_transfer, svc.member(), {"to_union_id": pending_union["id"]})


def test_leave_with_erase_removes_personal_data(svc, tap):
    union = svc.union(auto_approve=True)
    member = svc.member("13800000011")
    number = id_number()
    joined = svc.join(member, join_body(union["id"], number))
    other = svc.union(auto_approve=False)
    svc.request_transfer(member, {"to_union_id": other["id"]})
    svc.leave(member, True)
    env = tap.wait("member_left", joined["id"])
    assert env["data"] == {"member_id": joined["id"], "user_id": member["sub"], "union_id": union["id"],
                           "erased": True}
    stored = svc.db.members.find_one({"_id": joined["id"]})
    assert stored["status"] == "left" and stored["erased"] is True
    for field in ("name", "id_hash", "id_enc", "id_masked", "employer", "phone_masked", "live_id", "live_user"):
        assert field not in stored
    user = svc.db.users.find_one({"_id": member["sub"]})
    assert "phone_enc" not in user and "phone_hash" not in user
    assert svc.db.transfers.find_one({"member_id": joined["id"]})["status"] == "cancelled"
    raises("NOT_FOUND", svc.leave, member, False)
    raises("INVALID_TOKEN", svc.join, member, join_body(union["id"], number))  # the old token's account is gone
    # the same person may join again later with a new login (a minute later: the code rate limit still holds)
    svc.db.otps.update_many({}, {"$set": {"sent": []}})
    fresh = svc.member("13800000011")
    assert fresh["sub"] != member["sub"]
    assert svc.join(fresh, join_body(union["id"], number))["status"] == "active"


def test_leave_without_erase_keeps_data_and_allows_erasing_later(svc, tap):
    union = svc.union(auto_approve=True)
    member = svc.member()
    joined = svc.join(member, join_body(union["id"]))
    svc.leave(member, False)
    assert tap.wait("member_left", joined["id"])["data"]["erased"] is False
    assert svc.get_me(member)["status"] == "left" and svc.get_me(member)["name"] == "张三"
    svc.leave(member, True)
    assert "name" not in svc.db.members.find_one({"_id": joined["id"]})


# ---- staff lists and statistics -------------------------------------------------------------------------------
def test_admin_lists_members_in_scope_with_cursor(svc):
    jinjiang = svc.union(auto_approve=True)
    zigong = svc.union(auto_approve=True, parent_id="un_510300")
    for _ in range(3):
        svc.join(svc.member(), join_body(jinjiang["id"]))
    svc.join(svc.member(), join_body(zigong["id"]))
    chengdu = dict(ADMIN, scope="5101")
    page1 = svc.list_members(chengdu, {"limit": 2})
    page2 = svc.list_members(chengdu, {"limit": 2, "cursor": page1["next_cursor"]})
    ids_ = [m["id"] for m in page1["items"] + page2["items"]]
    assert len(ids_) == 3 == len(set(ids_)) and page2["next_cursor"] is None
    assert all(m["union_id"] == jinjiang["id"] for m in page1["items"] + page2["items"])
    assert all("*" in m["id_number_masked"] for m in page1["items"])
    raises("OUT_OF_SCOPE", svc.list_members, chengdu, {"union_id": zigong["id"]})
    assert len(svc.list_members(ADMIN, {"union_id": zigong["id"]})["items"]) == 1
    assert svc.list_members(ADMIN, {"status": "pending"})["items"] == []
    raises("VALIDATION_ERROR", svc.list_members, ADMIN, {"cursor": "not a cursor"})
    raises("FORBIDDEN", svc.list_members, dict(ADMIN, role="member"), {})


def test_member_stats_in_scope(svc):
    jinjiang = svc.union(auto_approve=True)
    qingyang = svc.union(auto_approve=True, parent_id="un_510105")
    zigong = svc.union(auto_approve=True, parent_id="un_510300")
    svc.join(svc.member(), join_body(jinjiang["id"]))
    svc.join(svc.member(), join_body(qingyang["id"], occupation_group="delivery_rider"))
    svc.join(svc.member(), join_body(zigong["id"]))
    by_pref = svc.member_stats(ADMIN, {"group_by": "prefecture"})
    assert by_pref["total"] == 3
    assert {i["key"]: i["count"] for i in by_pref["items"]} == {"510100": 2, "510300": 1}
    assert by_pref["items"][0]["name"] == "成都市"
    chengdu = dict(ADMIN, scope="5101")
    counties = svc.member_stats(chengdu, {"group_by": "county"})
    assert {i["key"]: i["count"] for i in counties["items"]} == {"510104": 1, "510105": 1}
    groups = svc.member_stats(chengdu, {"group_by": "occupation_group"})
    assert {i["key"]: i["count"] for i in groups["items"]} == {"courier": 1, "delivery_rider": 1}
    unions = svc.member_stats(dict(ADMIN, scope="510104"), {"group_by": "union"})
    assert unions["items"] == [{"key": jinjiang["id"], "name": "测试工会", "count": 1}]
    raises("VALIDATION_ERROR", svc.member_stats, ADMIN, {"group_by": "galaxy"})


def test_member_counters_follow_every_change_and_equal_a_count_of_the_members(svc):
    """Joins (pending and active), approval, rejection, transfer, leaving, concurrent approvals: the counters (folded
    or not yet) give what counting the member documents gives, in every scope and grouping."""
    home, away = svc.union(auto_approve=False), svc.union(auto_approve=True, parent_id="un_510300")
    members = [svc.member() for _ in range(6)]
    joined = [svc.join(m, join_body(home["id"], occupation_group=g))
              for m, g in zip(members, ["courier", "courier", "delivery_rider", "courier", "truck_driver", "courier"])]
    svc.concurrently("approve_member", [(ADMIN, j["id"]) for j in joined[:4]] * 2)
    svc.reject_member(ADMIN, joined[4]["id"], {"reason": "不在本单位"})
    svc.request_transfer(members[0], {"to_union_id": away["id"]})
    svc.leave(members[1])
    svc.join(svc.member(), join_body(away["id"]))

    def brute(prefix, status, group_by):
        field = {"prefecture": "prefecture_code", "county": "region_code", "union": "union_id",
                 "occupation_group": "occupation_group"}[group_by]
        out = collections.Counter(m[field] for m in svc.db.members.find({"status": status})
                                  if m["union_code"].startswith(prefix))
        return dict(out)

    for folded in (False, True):
        if folded:
            svc.fold_member_counts()
            assert svc.db.member_count_deltas.count_documents({}) == 0
        for scope in ("51", "5101", "510104", "5103", home["code"]):
            for status in ("pending", "active", "rejected", "left"):
                for group_by in ("prefecture", "county", "union", "occupation_group"):
                    got = svc.member_stats(dict(ADMIN, scope=scope), {"group_by": group_by, "status": status})
                    assert {i["key"]: i["count"] for i in got["items"]} == brute(scope, status, group_by), \
                        (scope, status, group_by, folded)

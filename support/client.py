"""A client of a running stack (``support.stack``) through the gateway, as the tests, benchmarks and chaos runs use it:
tokens for every role, joining a union, unique test identities.

``member_token`` goes the way a phone does (OTP request, code from the development SMS sink, token exchange), so it
needs membership and notify running; everything else needs membership only.
"""
import json
import random
import threading
import time
import uuid

import requests

from support import builders
from support.stack import ADMIN_PASSWORD, wait_for
from unionhub_kit import ids

STAFF_PASSWORD = "Staff-Test-Passw0rd"
SMS_WAIT_SECONDS = 10

_lock = threading.Lock()
_phones = set()
_id_numbers = set()


def auth(token):
    """The Authorization header for ``token``."""
    return {"Authorization": "Bearer %s" % token}


def new_phone():
    """A fresh valid mainland mobile number (never handed out twice in this process)."""
    with _lock:
        while True:
            phone = "1%d%09d" % (random.choice((3, 5, 7, 8, 9)), random.randrange(10 ** 9))
            if phone not in _phones:
                _phones.add(phone)
                return phone


def new_id_number(region="510104", min_age=18, max_age=60):
    """A fresh valid resident ID number (GB 11643) of someone aged ``min_age``..``max_age``."""
    this_year = time.gmtime().tm_year
    with _lock:
        while True:
            year = random.randint(this_year - max_age, this_year - min_age - 1)
            birth = "%04d%02d%02d" % (year, random.randint(1, 12), random.randint(1, 28))
            number = ids.make_resident_id(region, birth, random.randrange(1000))
            if number not in _id_numbers:
                _id_numbers.add(number)
                return number


new_uscc = builders.new_uscc


def _token(stack, body):
    r = requests.post(stack.url + "/api/v1/auth/token", json=body, timeout=15)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def admin_token(stack):
    """A token of the bootstrap account ``admin`` (union_admin, scope ``51``); cached per stack for 10 minutes
    (access tokens live 15)."""
    cached, at = getattr(stack, "_admin_token", None) or (None, 0)
    if cached is None or time.time() - at > 600:
        cached = _token(stack, {"username": "admin", "password": ADMIN_PASSWORD})
        stack._admin_token = (cached, time.time())
    return cached


def otp_code(stack, phone, after=0, wait=SMS_WAIT_SECONDS):
    """The newest login code sent to ``phone`` through the development SMS sink (entry number ``after`` or later)."""
    deadline = time.time() + wait
    while True:
        sent = [m for m in stack.sms_outbox()[after:] if m.get("to") == phone and m.get("template") == "otp"]
        if sent:
            return sent[-1]["params"]["code"]
        if time.time() > deadline:
            raise AssertionError("no OTP SMS for %s within %ss" % (phone, wait))
        time.sleep(0.1)


def request_otp(stack, phone):
    """Ask for a login code; return the code from the SMS sink."""
    before = len(stack.sms_outbox())
    r = requests.post(stack.url + "/api/v1/auth/otp", json={"phone": phone}, timeout=15)
    assert r.status_code == 202, r.text
    return otp_code(stack, phone, after=before)


def member_token(stack, phone=None):
    """A member token for ``phone`` (a fresh phone when None), obtained by OTP like the app does."""
    phone = phone or new_phone()
    code = request_otp(stack, phone)
    return _token(stack, {"phone": phone, "code": code})


def staff_token(stack, admin, username, role, password=STAFF_PASSWORD, **ids_):
    """Create an account (``org_code=``, ``merchant_id=``, ``employer_id=``) with ``admin``'s token, log in."""
    body = dict({"username": username, "password": password, "role": role}, **ids_)
    r = requests.post(stack.url + "/api/v1/admin/accounts", json=body, headers=auth(admin), timeout=15)
    assert r.status_code == 201, r.text
    return _token(stack, {"username": username, "password": password})


def create_union(stack, admin=None, parent_code="510104", auto_approve=True, name=None):
    """Create a grassroots union under the union whose code is ``parent_code``; return its JSON."""
    admin = admin or admin_token(stack)
    parent = union_by_code(stack, parent_code)
    body = {"name": name or "测试基层工会 %s" % uuid.uuid4().hex[:6], "parent_id": parent["id"], "uscc": new_uscc(),
            "auto_approve": auto_approve}
    r = requests.post(stack.url + "/api/v1/unions", json=body, headers=auth(admin), timeout=15)
    assert r.status_code == 201, r.text
    return r.json()


def union_by_code(stack, code):
    """The province, prefecture or county union with organisation ``code`` (a six-digit region code)."""
    level = {"510000": "province"}.get(code) or ("prefecture" if code.endswith("00") else "county")
    params = {"level": level, "limit": 100}
    cursor = None
    while True:
        if cursor:
            params["cursor"] = cursor
        r = requests.get(stack.url + "/api/v1/unions", params=params, timeout=15)
        assert r.status_code == 200, r.text
        page = r.json()
        for u in page["items"]:
            if u["code"] == code:
                return u
        cursor = page["next_cursor"]
        if not cursor:
            raise AssertionError("no union with code %s" % code)


def auto_union(stack):
    """An auto-approve grassroots union under 510104 (created once per stack)."""
    cached = getattr(stack, "_auto_union", None)
    if cached is None:
        cached = create_union(stack, auto_approve=True)
        stack._auto_union = cached
    return cached


def join(stack, token, union_id=None, occupation_group="courier", id_number=None, name="张三",
         employer="蜀道快递有限公司", idempotency_key=None):
    """Join ``union_id`` (default: an auto-approve union under 510104, so the member is active at once)."""
    union_id = union_id or auto_union(stack)["id"]
    body = {"name": name, "id_number": id_number or new_id_number(), "union_id": union_id, "employer": employer,
            "occupation_group": occupation_group, "consent": True}
    headers = auth(token)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    r = requests.post(stack.url + "/api/v1/members", data=json.dumps(body), headers=dict(
        headers, **{"Content-Type": "application/json"}), timeout=15)
    assert r.status_code == 201, r.text
    return r.json()


def new_member(stack, occupation_group="courier", union_id=None):
    """A fresh phone, its token, and its membership: ``(token, member_json, phone)``."""
    phone = new_phone()
    token = member_token(stack, phone)
    return token, join(stack, token, union_id=union_id, occupation_group=occupation_group), phone


# ---- plain calls, and benefits' members and campaigns ------------------------------------------------------------
def post(stack, path, token=None, body=None, headers=None):
    h = dict(auth(token) if token else {}, **(headers or {}))
    return requests.post(stack.url + path, json=body, headers=h, timeout=30)


def get(stack, path, token=None, params=None):
    return requests.get(stack.url + path, params=params, headers=auth(token) if token else {}, timeout=30)


def problem(r, status, code, field=None):
    """``r`` is a problem document (RFC 9457) of ``status`` with ``code`` (and, given ``field``, an error about that
    field or one inside it); returns it."""
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    doc = r.json()
    assert doc["code"] == code and doc["status"] == status and doc["title"], r.text
    assert isinstance(doc.get("errors", {}), dict), doc
    if field:
        assert any(k == field or k.startswith(field + ".") for k in doc.get("errors", {})), r.text
    return doc


def project(stack, envelopes):
    """Publish membership events on the stack's broker (as membership's outbox does) and wait until benefits has
    applied them."""
    from nameko.standalone.events import event_dispatcher
    dispatch = event_dispatcher({"AMQP_URI": stack.env["AMQP_URI"], "serializer": "json"})
    for env in envelopes:
        dispatch("membership", env["type"].split(".")[3], env)
    users = [e["data"]["user_id"] for e in envelopes]
    members = stack.db("benefits").members
    wait_for(lambda: members.count_documents({"_id": {"$in": users}}) == len(set(users)), what="member projection")


def projected_members(stack, n, **kw):
    """``n`` active members benefits knows (``member_joined`` published; ``kw``: ``builders.member_data``) with
    tokens minted with the stack's key: ``[(user_id, token)]``."""
    from unionhub_kit import tokens
    users = ["usr_%s" % uuid.uuid4().hex[:12] for _ in range(n)]
    project(stack, [builders.joined_event(u, **kw) for u in users])
    return [(u, tokens.issue(u, "member")) for u in users]


def new_merchant(stack, admin=None, region="510104", **over):
    r = post(stack, "/api/v1/merchants", admin or admin_token(stack), builders.merchant_body(region, **over))
    assert r.status_code == 201, r.text
    return r.json()


def new_campaign(stack, merchant_id, admin=None, **over):
    """A campaign through the gateway (``builders.campaign_body`` with ``over``); its JSON."""
    r = post(stack, "/api/v1/campaigns", admin or admin_token(stack), builders.campaign_body(merchant_id, **over))
    assert r.status_code == 201, r.text
    return r.json()


# ---- what services emit, as a subscriber sees it ---------------------------------------------------------------
class EventTap:
    """A queue of the test's own bound to ``<service>.events`` for ``event``: the events emitted after it was made,
    as any subscriber gets them (the relay deletes an outbox row once the broker has its event, so the outbox is
    no witness of what was emitted). ``messages()`` returns (and keeps) every envelope received so far."""

    def __init__(self, amqp_uri, service, event):
        import uuid as _uuid

        from kombu import Connection, Queue

        from unionhub_kit import topology
        self.conn = Connection(amqp_uri)
        self.queue = Queue("tap-%s-%s" % (event, _uuid.uuid4().hex[:8]), exchange=topology.event_exchange(service),
                           routing_key=event, durable=False, auto_delete=False, exclusive=True)(self.conn.channel())
        self.queue.declare()
        self.got = []

    def messages(self, **data):
        """Envelopes so far (those whose ``data`` has every given field, when given)."""
        while True:
            msg = self.queue.get(no_ack=True)
            if msg is None:
                break
            self.got.append(json.loads(msg.body))
        return [e for e in self.got if all(e["data"].get(k) == v for k, v in data.items())]

    def close(self):
        self.conn.close()

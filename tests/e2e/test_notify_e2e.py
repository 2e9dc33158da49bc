"""Notify through the gateway, every process started as `make run` starts them: the welcome in the inbox and by SMS
after a real join, reading and paging the inbox, preferences, devices, announcements with progress, integrator
webhooks with signed deliveries and replay, and the bad input each route refuses with a problem document."""
import time
import uuid

import requests

from support.client import admin_token, auth, member_token, new_member, problem, staff_token
from tests.service.notify_support import Receiver, signature_ok

WAIT = 30


def call(stack, method, path, token=None, **kw):
    return requests.request(method, stack.url + path, headers=auth(token) if token else {}, timeout=15, **kw)


def eventually(fn, timeout=WAIT):
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.time() < deadline, "condition not met within %ss" % timeout
        time.sleep(0.1)


def inbox(stack, token, **params):
    r = call(stack, "GET", "/api/v1/members/me/notifications", token, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_join_welcomes_in_the_inbox_and_by_sms_and_the_inbox_is_private(stack):
    token, membership, phone = new_member(stack)
    # other suites share this stack: a live welcome campaign may add a benefits entry; the welcome is the one
    # membership entry
    welcomes = eventually(lambda: [n for n in inbox(stack, token)["items"] if n["category"] == "membership"])
    [welcome] = welcomes
    assert welcome["category"] == "membership" and welcome["read"] is False
    assert membership["card_no"] in welcome["body"]
    assert set(welcome) == {"id", "category", "title", "body", "created_at", "read"}
    sms = eventually(lambda: [m for m in stack.sms_outbox() if m["to"] == phone and m["template"] == "member_joined"])
    assert membership["card_no"] in sms[0]["text"]

    r = call(stack, "POST", "/api/v1/members/me/notifications/%s/read" % welcome["id"], token)
    assert r.status_code == 200 and r.json()["read"] is True
    assert welcome["id"] not in [n["id"] for n in inbox(stack, token, unread="true")["items"]]
    assert [n["read"] for n in inbox(stack, token)["items"] if n["id"] == welcome["id"]] == [True]

    other = member_token(stack)
    problem(call(stack, "POST", "/api/v1/members/me/notifications/%s/read" % welcome["id"], other), 404, "NOT_FOUND")
    assert inbox(stack, other)["items"] == []
    problem(call(stack, "GET", "/api/v1/members/me/notifications", token, params={"cursor": "nope"}), 400,
            "VALIDATION_ERROR")
    problem(call(stack, "GET", "/api/v1/members/me/notifications", token, params={"limit": 500}), 400,
            "VALIDATION_ERROR")
    problem(call(stack, "GET", "/api/v1/members/me/notifications"), 401, "UNAUTHORIZED")
    problem(call(stack, "GET", "/api/v1/members/me/notifications", admin_token(stack)), 403, "FORBIDDEN")


def test_preferences_and_devices(stack):
    token = member_token(stack)
    r = call(stack, "GET", "/api/v1/members/me/preferences", token)
    assert r.status_code == 200
    assert r.json() == {"sms": True, "push": True, "muted_categories": [], "quiet_hours": None, "language": "zh"}
    body = {"sms": False, "push": True, "muted_categories": ["jobs"], "quiet_hours": {"start": "22:00", "end": "08:00"}}
    r = call(stack, "PUT", "/api/v1/members/me/preferences", token, json=body)
    assert r.status_code == 200, r.text
    assert call(stack, "GET", "/api/v1/members/me/preferences", token).json() == dict(body, language="zh")
    bad = problem(call(stack, "PUT", "/api/v1/members/me/preferences", token, json={"muted_categories": ["spam"]}),
                  400, "VALIDATION_ERROR")
    assert "muted_categories.0" in bad["errors"]
    for quiet in ({"start": "25:00", "end": "08:00"}, {"start": "22:00"}, "22:00-08:00",
                  {"start": "08:00", "end": "08:00"}):
        problem(call(stack, "PUT", "/api/v1/members/me/preferences", token, json={"quiet_hours": quiet}), 400,
                "VALIDATION_ERROR")
    problem(call(stack, "PUT", "/api/v1/members/me/preferences", token, json={"sms": "no"}), 400, "VALIDATION_ERROR")
    assert call(stack, "GET", "/api/v1/members/me/preferences", token).json() == dict(body, language="zh")

    r = call(stack, "POST", "/api/v1/members/me/devices", token, json={"platform": "android", "token": "fcm-" + "a" * 60})
    assert r.status_code == 201, r.text
    assert r.json()["platform"] == "android" and "a" * 60 not in r.text
    for device in ({"platform": "android", "token": ""}, {"platform": "ios", "token": "x" * 513},
                   {"platform": "symbian", "token": "abc"}, {"platform": "ios"}):
        problem(call(stack, "POST", "/api/v1/members/me/devices", token, json=device), 400, "VALIDATION_ERROR")
    device_id = r.json()["id"]
    listed = call(stack, "GET", "/api/v1/members/me/devices", token).json()["items"]
    assert [d["id"] for d in listed] == [device_id] and "a" * 60 not in str(listed)
    other = member_token(stack)
    assert call(stack, "GET", "/api/v1/members/me/devices", other).json()["items"] == []
    problem(call(stack, "DELETE", "/api/v1/members/me/devices/" + device_id, other), 404, "NOT_FOUND")
    assert call(stack, "DELETE", "/api/v1/members/me/devices/" + device_id, token).status_code == 204
    assert call(stack, "GET", "/api/v1/members/me/devices", token).json()["items"] == []
    problem(call(stack, "DELETE", "/api/v1/members/me/devices/" + device_id, token), 404, "NOT_FOUND")
    assert stack.db("notify").devices.count_documents({"_id": device_id}) == 0


def test_announcement_to_an_audience_with_progress(stack):
    admin = admin_token(stack)
    couriers = [new_member(stack, occupation_group="courier")[0] for _ in range(2)]
    rider = new_member(stack, occupation_group="delivery_rider")[0]
    body = {"title": "端午慰问 %s" % uuid.uuid4().hex[:6], "body": "工会为快递员准备了慰问品。",
            "audience": {"region_codes": ["510104"], "occupation_groups": ["courier"]}}
    # the projection is built from events: wait until notify has seen these members (their welcome is in)
    for t in couriers + [rider]:
        eventually(lambda: inbox(stack, t)["items"])
    r = call(stack, "POST", "/api/v1/announcements", admin, json=body)
    assert r.status_code == 202, r.text
    aid = r.json()["id"]

    def done():
        p = call(stack, "GET", "/api/v1/announcements/%s" % aid, admin).json()
        return p if p["status"] == "done" else None
    progress = eventually(done)
    assert progress["id"] == aid and progress["delivered"] == progress["recipients"] >= 2
    for t in couriers:
        entry = [i for i in inbox(stack, t)["items"] if i["title"] == body["title"]]
        assert len(entry) == 1 and entry[0]["category"] == "announcements"
    assert not [i for i in inbox(stack, rider)["items"] if i["title"] == body["title"]]

    chengdu = staff_token(stack, admin, "cd_admin_%s" % uuid.uuid4().hex[:6], "union_admin", org_code="510100")
    problem(call(stack, "POST", "/api/v1/announcements", chengdu, json=dict(body, audience={"region_codes": ["5107"]})),
            403, "OUT_OF_SCOPE")
    problem(call(stack, "POST", "/api/v1/announcements", chengdu, json=dict(body, audience={"region_codes": ["51"]})),
            403, "OUT_OF_SCOPE")
    problem(call(stack, "POST", "/api/v1/announcements", admin, json=dict(body, audience={})), 400,
            "VALIDATION_ERROR")
    problem(call(stack, "POST", "/api/v1/announcements", admin, json=dict(body, audience={"region_codes": ["99"]})),
            400, "VALIDATION_ERROR")
    problem(call(stack, "POST", "/api/v1/announcements", couriers[0], json=body), 403, "FORBIDDEN")
    problem(call(stack, "GET", "/api/v1/announcements/%s" % ("0" * 24), admin), 404, "NOT_FOUND")
    # the same Idempotency-Key gives the first answer again
    headers = dict(auth(admin), **{"Idempotency-Key": "ann-%s" % uuid.uuid4().hex})
    first = requests.post(stack.url + "/api/v1/announcements", json=body, headers=headers, timeout=15)
    again = requests.post(stack.url + "/api/v1/announcements", json=body, headers=headers, timeout=15)
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]


def test_webhooks_signed_delivery_log_and_replay(stack):
    admin = admin_token(stack)
    integrator = staff_token(stack, admin, "integ_%s" % uuid.uuid4().hex[:6], "integrator")
    other = staff_token(stack, admin, "integ_%s" % uuid.uuid4().hex[:6], "integrator")
    receiver = Receiver()
    try:
        secret = "whsec-%s" % uuid.uuid4().hex
        r = call(stack, "POST", "/api/v1/webhooks", integrator,
                 json={"url": receiver.url, "event_types": ["membership.member_joined"], "secret": secret})
        assert r.status_code == 201, r.text
        hook = r.json()
        assert hook["event_types"] == ["membership.member_joined"] and "secret" not in hook
        _, membership, _ = new_member(stack)
        eventually(lambda: [i for i in range(len(receiver.requests))
                            if receiver.json(i)["data"]["member_id"] == membership["id"]])
        req = next(q for i, q in enumerate(receiver.requests) if receiver.json(i)["data"]["member_id"] == membership["id"])
        assert signature_ok(req, secret)
        event = receiver.json(receiver.requests.index(req))
        assert event["type"] == "org.unionhub.membership.member_joined.v1" and event["specversion"] == "1.0"
        assert "id_number" not in str(event["data"])

        log = eventually(lambda: (lambda items: [d for d in items if d["event_id"] == event["id"] and
                                                 d["status"] == "delivered"])(
            call(stack, "GET", "/api/v1/webhooks/%s/deliveries" % hook["id"], integrator).json()["items"]))
        assert log[0]["attempts"] == 1 and log[0]["last_status"] == 200
        problem(call(stack, "GET", "/api/v1/webhooks/%s/deliveries" % hook["id"], other), 404, "NOT_FOUND")
        r = call(stack, "POST", "/api/v1/webhooks/%s/deliveries/%s/replay" % (hook["id"], log[0]["id"]), integrator)
        assert r.status_code == 202 and r.json()["status"] == "pending"
        eventually(lambda: len([q for q in receiver.requests if q["body"] == req["body"]]) == 2)  # sent again
        again = [q for q in receiver.requests if q["body"] == req["body"]][1]
        assert signature_ok(again, secret)
        assert again["headers"]["X-UnionHub-Delivery"] == req["headers"]["X-UnionHub-Delivery"] == log[0]["id"]
        problem(call(stack, "POST", "/api/v1/webhooks/%s/deliveries/%s/replay" % (hook["id"], log[0]["id"]), other),
                404, "NOT_FOUND")
    finally:
        receiver.close()

    for body in ({"url": "ftp://hooks.example.com/x", "event_types": ["member_joined"], "secret": "s" * 16},
                 {"url": "https://user:pw@hooks.example.com/x", "event_types": ["member_joined"], "secret": "s" * 16},
                 {"url": "https://hooks.example.com/x", "event_types": ["member_exploded"], "secret": "s" * 16},
                 {"url": "https://hooks.example.com/x", "event_types": [], "secret": "s" * 16},
                 {"url": "https://hooks.example.com/x", "event_types": ["member_joined"]}):
        problem(call(stack, "POST", "/api/v1/webhooks", integrator, json=body), 400, "VALIDATION_ERROR")
    problem(call(stack, "POST", "/api/v1/webhooks", admin, json={
        "url": "https://hooks.example.com/x", "event_types": ["member_joined"], "secret": "s" * 16}), 403, "FORBIDDEN")


def test_a_member_answered_active_sees_announcements_in_the_very_next_read(stack):
    """Read your own writes in notify: a member whose join was answered ``active`` reads an announcement to their
    region in the very next inbox read. So that notify's projection certainly has not caught up, its
    ``member_joined`` queue is unbound from membership's exchange for the test (the event never reaches notify):
    only notify asking membership can show it."""
    from kombu import Connection

    from unionhub_kit import topology
    queue = topology.queue_name(topology.find("notify", "on_member_joined"))
    exchange = topology.exchange_name("membership")
    admin = admin_token(stack)
    with Connection(stack.env["AMQP_URI"]) as conn:
        conn.default_channel.queue_unbind(queue=queue, exchange=exchange, routing_key="member_joined")
        try:
            token, member, _ = new_member(stack, occupation_group="courier")
            assert member["status"] == "active"
            title = "即时公告 %s" % uuid.uuid4().hex[:6]
            r = call(stack, "POST", "/api/v1/announcements", admin, json={
                "title": title, "body": "新会员也能立刻看到。", "audience": {"region_codes": ["510104"]}})  # the default union
            assert r.status_code == 202, r.text
            items = inbox(stack, token)["items"]
            assert [i for i in items if i["title"] == title], items
            never = member_token(stack)  # signed in, never joined: no announcements
            assert not [i for i in inbox(stack, never)["items"] if i["title"] == title]
        finally:
            conn.default_channel.queue_bind(queue=queue, exchange=exchange, routing_key="member_joined")

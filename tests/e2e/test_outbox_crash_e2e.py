"""Failure on the real stack: membership dies after committing an approval and before publishing ``member_joined``
(``UNIONHUB_FAULT=crash_before_publish`` makes it exit with 17 at exactly that point). While it is down the gateway
says so (``/readyz`` 503 naming it, calls answered 503/504 instead of hanging); once it is back, the event left in
the outbox is published, and reaches both an integrator's queue and notify (the welcome in the inbox)."""
import json
import uuid

import requests
from kombu import Connection, Queue

from support.client import admin_token, auth, create_union, member_token, new_id_number
from unionhub_kit import topology
from support.stack import wait_for

CRASH_EXIT_CODE = 17


class Tap:
    """An integrator's own queue bound to ``membership.events`` / ``member_joined``."""

    def __init__(self, amqp_uri):
        self.conn = Connection(amqp_uri)
        self.bound = Queue("it-crash-%s" % uuid.uuid4().hex[:8], exchange=topology.event_exchange("membership"),
                           routing_key="member_joined", durable=True, auto_delete=False)(self.conn.channel())
        self.bound.declare()

    def messages(self):
        out = []
        while True:
            msg = self.bound.get(no_ack=True)
            if msg is None:
                return out
            out.append(json.loads(msg.body))

    def close(self):
        self.conn.close()


def test_event_survives_a_crash_between_commit_and_publish(make_stack):
    s = make_stack()
    tap = Tap(s.env["AMQP_URI"])
    try:
        admin = admin_token(s)
        union = create_union(s, admin, auto_approve=False)
        member = member_token(s)
        r = requests.post(s.url + "/api/v1/members", headers=auth(member), timeout=15, json={
            "name": "赵六", "id_number": new_id_number(), "union_id": union["id"], "employer": "川运物流",
            "occupation_group": "truck_driver", "consent": True})
        assert r.status_code == 201 and r.json()["status"] == "pending", r.text
        member_id = r.json()["id"]

        # membership again, this time dying between commit and publish
        s.stack.kill("membership")
        crashing = s.stack.start_service("membership", 0, extra_env={"UNIONHUB_FAULT": "crash_before_publish"})
        s.stack.wait_ready(60)
        try:
            r = requests.post(s.url + "/api/v1/admin/members/%s/approve" % member_id, headers=auth(admin), timeout=30)
            assert r.status_code in (200, 503, 504), r.text  # the answer may or may not have left before the exit
        finally:
            assert crashing.wait(timeout=30) == CRASH_EXIT_CODE

        db = s.db("membership")
        stored = db.members.find_one({"_id": member_id})
        assert stored["status"] == "active" and stored["card_no"]  # the state change was committed
        event = db.outbox.find_one({"type": "member_joined", "envelope.subject": member_id})
        assert event is not None and event["published_at"] is None  # ... and its event was not published
        assert tap.messages() == []

        # while membership is down, the gateway says so instead of hanging
        r = requests.get(s.url + "/readyz", timeout=30)
        assert r.status_code == 503 and "membership" in r.json()["down"], r.text
        assert r.json()["checks"]["membership"] == "down" and r.json()["checks"]["notify"] == "ok"
        r = requests.get(s.url + "/api/v1/members/me", headers=auth(member), timeout=30)
        assert r.status_code in (503, 504), r.text
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert r.json()["code"] in ("SERVICE_UNAVAILABLE", "SERVICE_TIMEOUT")

        # back without the fault: the relay publishes what the dead process left behind
        s.stack.kill("membership")
        s.stack.start_service("membership", 0)
        got = wait_for(tap.messages, 30, what="member_joined after the restart")
        assert [m["subject"] for m in got] == [member_id]
        data = got[0]["data"]
        assert data["card_no"] == stored["card_no"] and data["status"] == "active" and data["user_id"] == stored[
            "user_id"]
        # the relay deletes the row once the broker confirmed it: a moment after the tap may already have the message
        wait_for(lambda: db.outbox.find_one({"_id": event["_id"]}) is None, 30, what="the row gone once published")
        s.stack.wait_ready(60)

        def welcomed():
            r = requests.get(s.url + "/api/v1/members/me/notifications", headers=auth(member), timeout=15)
            return r.status_code == 200 and [n for n in r.json()["items"] if n["category"] == "membership"]
        wait_for(welcomed, 15, what="the welcome notification")
    finally:
        tap.close()

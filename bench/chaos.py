"""``make chaos``: fault injection against a running stack (started as ``make run`` starts it, with its own store
process and RabbitMQ vhost), results in ``bench/results/chaos.json``.

Each experiment runs a burst of ``CHAOS_JOINS`` joins (default 40, ``CHAOS_CONCURRENCY`` 8 at a time, every member
logged in by OTP beforehand) and injects its fault about a second into the burst. A client retries a join answered
503/504 (or not answered) with the same ``Idempotency-Key`` for up to ``CHAOS_CLIENT_SECONDS`` (60), as the API asks.
Then, for every join answered 201 ("accepted"), it waits up to ``CHAOS_SETTLE_SECONDS`` (90) for everything the join
sets off: the member active, one welcome inbox entry (notify), one welcome coupon (benefits, a live welcome
campaign), the ``member_joined`` webhook at an integrator's local receiver, the welcome SMS in the SMS sink.

Reported per experiment: accepted, lost (an accepted join missing any of those), duplicated (a second member of one
person, a second welcome coupon or inbox entry), HTTP answers by status (every attempt, retries included), webhook
POSTs and SMS per member and whether each kept one delivery id, and the recovery time (fault to ``/readyz`` 200 and
a fresh join answered 201).

Experiments: kill -9 of membership, notify, benefits, the gateway and the store (each started again at once, as
``make run``'s supervisor does); every broker connection closed; SIGTERM of membership and of the gateway
(started again after they exit); poison messages on ``membership.events`` (a wrong-schema event, invalid JSON,
``text/plain``), each of which must be parked in the DLQ of every queue that gets it. ``CHAOS_ONLY`` (comma
separated names) runs a subset.
"""
from bench import common  # noqa: I001  (monkey-patches first)

import collections
import json
import os
import shutil
import signal
import tempfile
import time
import uuid

import requests

from deploy.stack import Stack, free_port
from support import client
from tests.service.notify_support import Receiver
from unionhub_kit import events, topology

JOINS = common.env_int("CHAOS_JOINS", 40)
CONCURRENCY = common.env_int("CHAOS_CONCURRENCY", 8)
CLIENT_SECONDS = common.env_float("CHAOS_CLIENT_SECONDS", 60)
SETTLE_SECONDS = common.env_float("CHAOS_SETTLE_SECONDS", 90)
FAULT_AFTER = 1.0


class Chaos:
    def __init__(self):
        self.tmp = tmp = tempfile.mkdtemp(prefix="uh-chaos-")
        self.store = Stack(log_dir=os.path.join(tmp, "store-log"), say=common.say)
        self.store_dir, self.store_port = os.path.join(tmp, "store"), free_port()
        os.environ["BENCH_MONGO_URI"] = self.store.start_store(self.store_dir, self.store_port)
        self.audit = os.path.join(tmp, "writes")
        self.st = common.start_stack(extra_env={"EVENT_RETRY_BASE_MS": "200",
                                                "UNIONHUB_WRITE_AUDIT": self.audit})
        self.receiver = Receiver()
        admin = common.admin_token(self.st)
        self.union = client.create_union(self.st, admin, auto_approve=True)
        self.welcome = common.create_campaign(self.st, admin, quota=100000, welcome=True, title="入会礼 chaos")
        integrator = client.staff_token(self.st, admin, "chaos-%s" % uuid.uuid4().hex[:6], "integrator")
        r = requests.post(self.st.url + "/api/v1/webhooks", headers=client.auth(integrator), timeout=30, json={
            "url": self.receiver.url, "event_types": ["member_joined"], "secret": "chaos-webhook-secret"})
        assert r.status_code == 201, r.text

    def mixed_writes(self):
        """Collections some process wrote both in and outside transactions during the run."""
        kinds = collections.defaultdict(set)
        folder, stem = os.path.split(self.audit)
        for name in os.listdir(folder):
            if name.startswith(stem + "."):
                with open(os.path.join(folder, name)) as f:
                    for line in f:
                        coll, kind = line.split()
                        kinds[coll].add(kind)
        return sorted(c for c, k in kinds.items() if len(k) > 1)

    def close(self):
        self.receiver.close()
        self.st.stop()
        self.store.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- faults ---------------------------------------------------------------------------------------------
    def restart_service(self, name, sig):
        procs = self.st.stack.procs.get(name, [])
        self.st.stack.kill(name, sig)  # waits for the exit (SIGTERM: the drain), then the process is gone
        for i in range(max(1, len(procs))):
            self.st.stack.start_service(name, i)

    def kill_store(self):
        os.killpg(self.store.store_proc.pid, signal.SIGKILL)
        self.store.store_proc.wait()
        self.store.store_proc = None
        self.store.start_store(self.store_dir, self.store_port)

    def close_broker_connections(self):
        vhost = self.st.vhost
        conns = common.mgmt("GET", "vhosts/%s/connections" % requests.utils.quote(vhost, safe="")).json()
        for c in conns:
            common.mgmt("DELETE", "connections/%s" % requests.utils.quote(c["name"], safe=""))
        return len(conns)

    def poison(self):
        from kombu import Connection
        exchange = topology.event_exchange("membership")
        from tests.service.test_kit_events import MEMBER
        wrong = events.build("membership", "member_joined", MEMBER, subject="x")
        wrong["data"] = {"nonsense": True}
        with Connection(self.st.amqp_uri) as conn:
            p = conn.Producer()
            p.publish(json.dumps(wrong), exchange=exchange, routing_key="member_joined",
                      content_type="application/json", content_encoding="utf-8")
            p.publish(b'{"id": "broken', exchange=exchange, routing_key="member_joined",
                      content_type="application/json", content_encoding="utf-8")
            p.publish(b"member joined", exchange=exchange, routing_key="member_joined", content_type="text/plain",
                      content_encoding="utf-8")

    def dlq_depths(self):
        out = {}
        for sub in topology.SUBSCRIPTIONS:
            if ("membership", "member_joined") in set(topology.expand(sub.bindings)):
                name = topology.queue_name(sub) + topology.DLQ_SUFFIX
                out[name] = common.queue_depth(self.st, name) or 0
        return out

    # ---- load and checks ------------------------------------------------------------------------------------
    def members(self, n):
        out = []
        pool = common.eventlet.GreenPool(8)

        def one(_):
            phone = client.new_phone()
            out.append((client.member_token(self.st, phone), phone))
        for i in range(n):
            pool.spawn_n(one, i)
        pool.waitall()
        return out

    def join(self, token, statuses):
        body = {"name": "孙八", "id_number": client.new_id_number(), "union_id": self.union["id"],
                "employer": "川运物流", "occupation_group": "courier", "consent": True}
        headers = dict(client.auth(token), **{"Idempotency-Key": uuid.uuid4().hex})
        deadline = time.time() + CLIENT_SECONDS
        while True:
            try:
                r = requests.post(self.st.url + "/api/v1/members", json=body, headers=headers, timeout=30)
                status = r.status_code
            except requests.RequestException as exc:
                r, status = None, "no answer (%s)" % type(exc).__name__
            statuses[status] += 1
            if status == 201:
                return r.json()["id"]
            if (status not in (503, 504) and r is not None) or time.time() > deadline:
                return None
            common.eventlet.sleep(0.5)

    def ready_and_joining(self, since, token):
        """Seconds from ``since`` until /readyz is 200 and a fresh member's join (``token``, logged in before the
        fault) is answered 201."""
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if requests.get(self.st.url + "/readyz", timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.join(token, collections.Counter())
        return round(time.time() - since, 2)

    def check(self, accepted, phones):
        """``(lost, duplicated, details)`` of the accepted joins, waiting up to SETTLE_SECONDS for their effects."""
        ms, ns, bs = self.st.db("membership"), self.st.db("notify"), self.st.db("benefits")
        deadline = time.time() + SETTLE_SECONDS
        while True:
            members = {m["_id"]: m for m in ms.members.find({"_id": {"$in": list(accepted.values())}})}
            users = {m["user_id"]: mid for mid, m in members.items()}
            inbox = collections.Counter(d["user_id"] for d in ns.notifications.find(
                {"user_id": {"$in": list(users)}, "template": "member_joined"}, {"user_id": 1}))
            coupons = collections.Counter(d["user_id"] for d in bs.coupons.find(
                {"user_id": {"$in": list(users)}, "campaign_id": self.welcome["id"]}, {"user_id": 1}))
            hooks = collections.defaultdict(list)
            for req in list(self.receiver.requests):
                body = json.loads(req["body"])
                hooks[body.get("subject")].append(req["headers"].get("X-UnionHub-Delivery"))
            sms = collections.defaultdict(list)
            for line in self.st.sms_outbox():
                if line.get("template") == "member_joined":
                    sms[line.get("to")].append(line.get("delivery_id"))
            missing = []
            for token, mid in accepted.items():
                m = members.get(mid)
                uid = m and m["user_id"]
                if not (m and m["status"] == "active" and inbox[uid] and coupons[uid] and hooks.get(mid)
                        and sms.get(phones[token])):
                    missing.append(mid)
            if not missing or time.time() > deadline:
                break
            time.sleep(1.0)
        per_user = collections.Counter(m["user_id"] for m in ms.members.find(
            {"user_id": {"$in": list(users)}}, {"user_id": 1}))
        dup = {"members": sum(1 for n in per_user.values() if n > 1),
               "inbox": sum(1 for n in inbox.values() if n > 1),
               "coupons": sum(1 for n in coupons.values() if n > 1)}
        mine = {mid for mid in accepted.values()}
        deliveries = {mid: ids for mid, ids in hooks.items() if mid in mine}
        texts = {phones[t]: sms.get(phones[t], []) for t in accepted}
        details = {
            "webhook_posts": sum(len(v) for v in deliveries.values()),
            "webhook_members_posted_more_than_once": sum(1 for v in deliveries.values() if len(v) > 1),
            "webhook_delivery_id_stable": all(len(set(v)) == 1 for v in deliveries.values()),
            "sms": sum(len(v) for v in texts.values()),
            "sms_members_sent_more_than_once": sum(1 for v in texts.values() if len(v) > 1),
            "sms_delivery_id_stable": all(len(set(v)) <= 1 for v in texts.values()),
            "lost_member_ids": missing[:10],
        }
        return len(missing), dup, details

    def experiment(self, name, fault):
        common.say("chaos: %s ..." % name)
        people = self.members(JOINS + 1)
        probe, _ = people.pop()
        phones = {t: p for t, p in people}
        statuses, accepted = collections.Counter(), {}
        pool = common.eventlet.GreenPool(CONCURRENCY)

        def one(token):
            mid = self.join(token, statuses)
            if mid:
                accepted[token] = mid
        load = os.getloadavg()[0]
        started = time.time()
        for token, _ in people:
            pool.spawn_n(one, token)
        common.eventlet.sleep(FAULT_AFTER)
        fault_at = time.time()
        note = fault()
        faulted = time.time()
        recovering = common.eventlet.spawn(self.ready_and_joining, fault_at, probe)
        pool.waitall()
        burst = time.time() - started
        recovery = recovering.wait()
        lost, dup, details = self.check(accepted, phones)
        row = {"experiment": name, "joins": JOINS, "accepted": len(accepted), "lost": lost, "duplicated": dup,
               "http_status": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))},
               "http_500": statuses.get(500, 0), "fault_took_s": round(faulted - fault_at, 2),
               "recovery_s": recovery, "burst_s": round(burst, 2), "load_average_1m": round(load, 2)}
        row.update(details)
        if note is not None:
            row["note"] = note
        common.say("  %s" % json.dumps(row, ensure_ascii=False))
        return row


def main():
    os.environ.setdefault("UNIONHUB_ENV", "development")  # as make run runs it
    started = time.time()
    chaos = Chaos()
    experiments = [
        ("kill -9 membership", lambda: chaos.restart_service("membership", signal.SIGKILL)),
        ("kill -9 notify", lambda: chaos.restart_service("notify", signal.SIGKILL)),
        ("kill -9 benefits", lambda: chaos.restart_service("benefits", signal.SIGKILL)),
        ("kill -9 gateway", lambda: chaos.restart_service("gateway", signal.SIGKILL)),
        ("kill -9 store", chaos.kill_store),
        ("broker connections closed", lambda: "%d connections closed" % chaos.close_broker_connections()),
        ("SIGTERM membership", lambda: chaos.restart_service("membership", signal.SIGTERM)),
        ("SIGTERM gateway", lambda: chaos.restart_service("gateway", signal.SIGTERM)),
    ]
    only = [n.strip() for n in os.environ.get("CHAOS_ONLY", "").split(",") if n.strip()]
    rows = []
    try:
        for name, fault in experiments:
            if not only or name in only:
                rows.append(chaos.experiment(name, fault))
        if not only or "poison messages" in only:
            before = chaos.dlq_depths()

            def poison():
                chaos.poison()
            row = chaos.experiment("poison messages", poison)
            deadline = time.time() + 30
            while time.time() < deadline:
                after = chaos.dlq_depths()
                if all(after[q] - before.get(q, 0) >= 3 for q in after):
                    break
                time.sleep(0.5)
            row["parked_per_dlq"] = {q: after[q] - before.get(q, 0) for q in after}
            row["poison_parked_everywhere"] = all(v == 3 for v in row["parked_per_dlq"].values())
            rows.append(row)
        mixed = chaos.mixed_writes()
    finally:
        chaos.close()
    total = {"accepted": sum(r["accepted"] for r in rows), "lost": sum(r["lost"] for r in rows),
             "duplicated": sum(sum(r["duplicated"].values()) for r in rows),
             "http_500": sum(r["http_500"] for r in rows)}
    path = common.write_result("chaos", {"joins_per_experiment": JOINS, "concurrency": CONCURRENCY,
                                         "experiments": rows, "total": total,
                                         "collections_written_in_and_outside_transactions": mixed,
                                         "took_s": round(time.time() - started, 1)})
    print(common.table([(r["experiment"], r["accepted"], r["lost"], sum(r["duplicated"].values()),
                         " ".join("%s:%s" % kv for kv in r["http_status"].items() if kv[0] != "201") or "-",
                         r["recovery_s"], "%s/%s" % (r["webhook_posts"], r["sms"]), r["load_average_1m"])
                        for r in rows],
                       ["experiment", "accepted", "lost", "dup", "non-201 answers", "recovery s",
                        "webhooks/SMS", "load"]))
    print("total: %s -> %s" % (total, path))
    print("collections written both in and outside transactions: %s" % (", ".join(mixed) or "none"))
    return 1 if total["lost"] or total["duplicated"] or total["http_500"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The operations CLI (``python -m unionhub_kit``) on the real broker and store: dead-letter list and replay, outbox
show and re-drive, queue depths, ping, and creating accounts."""
import io
import json
import subprocess
import sys

import eventlet
import pytest
from kombu import Connection
from nameko.rpc import rpc

from unionhub_kit import cli, clock, events, outbox, topology
from unionhub_kit.consumer import idempotent, on_event
from unionhub_kit.mongo import Mongo
from support.stack import wait_for

MEMBER = {"member_id": "m1", "user_id": "u1", "union_id": "g1", "union_code": "5101040001", "region_code": "510104",
          "occupation_group": "courier", "status": "active", "card_no": "C1", "joined_at": "2026-01-01T00:00:00Z",
          "phone_masked": "138****5678"}


SUB = topology.Subscription("clitest", "on_member_joined", [("membership", "member_joined")])
QUEUE = topology.queue_name(SUB)


class Flaky:
    """Fails every event while ``broken`` is set (so it lands in the DLQ); counts what it applied."""
    name = "clitest"
    db = Mongo()
    broken = True

    @on_event("membership", "member_joined")
    @idempotent
    def on_member_joined(self, event, session):
        if Flaky.broken:
            raise RuntimeError("downstream is down")
        self.db.seen.update_one({"_id": event["data"]["member_id"]}, {"$inc": {"n": 1}}, upsert=True,
                                session=session)

    @rpc
    def ping(self):
        return {"service": self.name, "ok": True, "replica": "clitest-0"}


@pytest.fixture(autouse=True)
def subscription():
    topology.SUBSCRIPTIONS.append(SUB)
    Flaky.broken = True
    yield
    topology.SUBSCRIPTIONS.remove(SUB)


def run(capsys, config, *argv):
    rc = cli.main(["--amqp-uri", config["AMQP_URI"], "--mongo-uri", config["MONGO_URI"], "--db-prefix",
                   config["DB_PREFIX"], "--json"] + list(argv))
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip() else None)


def publish_joined(config, member_id):
    env = events.build("membership", "member_joined", dict(MEMBER, member_id=member_id), subject=member_id)
    with Connection(config["AMQP_URI"]) as conn:
        topology.declare(conn, ["membership"])
        conn.Producer(serializer="json").publish(env, exchange=topology.event_exchange("membership"),
                                                 routing_key="member_joined", retry=True)
    return env


def depth(config, name):
    with Connection(config["AMQP_URI"]) as conn:
        return cli.queue_state(conn, name)[0]


def test_dlq_list_shows_parked_messages_and_replay_redelivers_them_once(container_factory, config, db_of, capsys):
    con = container_factory(Flaky, config)
    con.start()
    envs = [publish_joined(config, "m%d" % i) for i in range(3)]
    wait_for(lambda: depth(config, QUEUE + ".dlq") == 3 or None, 20)

    rc, listed = run(capsys, config, "dlq", "list", "--peek", "10")
    assert rc == 0
    (entry,) = [e for e in listed["dead_letter_queues"] if e["queue"] == QUEUE + ".dlq"]
    assert entry["depth"] == 3
    assert {m["event"]["id"] for m in entry["messages"]} == {e["id"] for e in envs}
    assert all(m["attempts"] == 3 and "RuntimeError: downstream is down" in m["error"] for m in entry["messages"])
    assert db_of("clitest").seen.count_documents({}) == 0

    Flaky.broken = False  # the cause is fixed: replay two, then the rest
    rc, out = run(capsys, config, "dlq", "replay", QUEUE, "--count", "2")
    assert rc == 0 and out == {"replayed": 2, "from": QUEUE + ".dlq", "to": QUEUE}
    wait_for(lambda: db_of("clitest").seen.count_documents({}) == 2 or None, 15)
    assert depth(config, QUEUE + ".dlq") == 1
    rc, out = run(capsys, config, "dlq", "replay", QUEUE + ".dlq")
    assert rc == 0 and out["replayed"] == 1
    wait_for(lambda: db_of("clitest").seen.count_documents({}) == 3 or None, 15)
    eventlet.sleep(0.5)
    # each event applied exactly once, with its attempts counted afresh (no immediate re-park)
    assert sorted(d["n"] for d in db_of("clitest").seen.find()) == [1, 1, 1]
    assert depth(config, QUEUE + ".dlq") == 0 and depth(config, QUEUE) == 0
    rc, listed = run(capsys, config, "dlq", "list")
    assert rc == 0 and not [e for e in listed["dead_letter_queues"] if e["queue"] == QUEUE + ".dlq"]


def test_replay_of_an_unknown_queue_fails(config, capsys):
    rc = cli.main(["--amqp-uri", config["AMQP_URI"], "dlq", "replay", "evt-nope--nobody.nothing"])
    assert rc == 1
    assert "does not exist" in capsys.readouterr().err


def test_outbox_show_and_redrive_publish_pending_rows(config, db_of, capsys):
    db = db_of("membership")
    with Connection(config["AMQP_URI"]) as conn:
        topology.declare(conn, ["membership"])
    pending = []
    for i in range(3):  # as if the process had died between commit and publish
        env = events.build("membership", "member_joined", dict(MEMBER, member_id="o%d" % i))
        outbox.store(db, env, "member_joined")
        pending.append(env["id"])

    rc, shown = run(capsys, config, "outbox", "show", "membership")
    assert rc == 0
    assert shown["backlog"] == 3 and shown["oldest"]["event_id"] == pending[0]
    assert shown["oldest"]["type"] == "member_joined"

    rc, out = run(capsys, config, "outbox", "redrive", "membership")
    assert rc == 0 and out == {"service": "membership", "published": 3, "backlog": 0}
    assert db.outbox.count_documents({"published_at": None}) == 0
    # every subscriber queue of member_joined got each event, in order
    queue = topology.queue_name(topology.find("notify", "on_member_joined"))
    got = []
    with Connection(config["AMQP_URI"]) as conn:
        ch = conn.channel()
        while True:
            msg = ch.basic_get(queue=queue, no_ack=True)
            if msg is None:
                break
            got.append(json.loads(msg.body)["id"])
    assert got == pending

    rc, out = run(capsys, config, "outbox", "redrive", "membership")
    assert out["published"] == 0  # nothing is published twice
    rc, shown = run(capsys, config, "outbox", "show", "membership")
    assert shown["backlog"] == 0 and shown["oldest"] is None


def test_outbox_redrive_respects_a_live_lease_unless_stolen(config, db_of, capsys):
    db = db_of("benefits")
    env = events.build("benefits", "campaign_sold_out", {"campaign_id": "c1", "quota": 5})
    outbox.store(db, env, "campaign_sold_out")
    db.outbox.update_many({}, {"$set": {"lease_until": clock.now().replace(year=2100), "lease": "dead"}})
    rc, out = run(capsys, config, "outbox", "redrive", "benefits")
    assert out["published"] == 0 and out["backlog"] == 1
    rc, out = run(capsys, config, "outbox", "redrive", "benefits", "--steal")
    assert out["published"] == 1 and out["backlog"] == 0


def test_queues_lists_depths(config, capsys):
    publish_joined(config, "q1")
    rc, out = run(capsys, config, "queues")
    assert rc == 0
    rows = {r["queue"]: r for r in out["queues"]}
    assert rows[topology.queue_name(topology.find("notify", "on_member_joined"))]["messages"] == 1
    assert rows[topology.queue_name(topology.find("benefits", "on_member_joined"))]["messages"] == 1
    assert set(cli.rpc_queue_names()) <= set(rows)


def test_ping_answers_when_running_and_fails_when_not(container_factory, config, capsys):
    rc, out = run(capsys, config, "ping", "clitest", "--timeout", "2")
    assert rc == 1 and out["ok"] is False
    container_factory(Flaky, config).start()
    rc, out = run(capsys, config, "ping", "clitest", "--timeout", "5")
    assert rc == 0 and out["ok"] is True and out["replica"] == "clitest-0"


def test_create_account_writes_a_login_ready_account(config, db_of, capsys, container_factory):
    from services.membership import domain
    from services.membership.service import MembershipService
    container_factory(MembershipService, config).start()  # the CLI creates the account through its RPC
    rc, out = run(capsys, config, "create-account", "--username", "chengdu.ops", "--password", "Str0ng-Passw0rd!",
                  "--role", "union_admin", "--org-code", "510100")
    assert rc == 0, out
    assert out["username"] == "chengdu.ops" and out["role"] == "union_admin" and out["scope"] == "5101"
    doc = db_of("membership").accounts.find_one({"username": "chengdu.ops"})
    assert doc["_id"] == out["id"]
    assert "Str0ng-Passw0rd!" not in json.dumps(doc, default=str)
    assert domain.verify_password("Str0ng-Passw0rd!", doc["password_hash"])
    assert not domain.verify_password("wrong-password", doc["password_hash"])
    # the same username again, a union_admin without an organisation, an unknown organisation: refused
    rc, out = run(capsys, config, "create-account", "--username", "chengdu.ops", "--password", "An0ther-Passw0rd",
                  "--role", "integrator")
    assert rc == 1 and out["code"] == "USERNAME_TAKEN"
    rc, out = run(capsys, config, "create-account", "--username", "no.org", "--password", "Str0ng-Passw0rd!",
                  "--role", "union_admin")
    assert rc == 1 and out["code"] == "VALIDATION_ERROR" and "org_code" in out["errors"]
    rc, out = run(capsys, config, "create-account", "--username", "bad.org", "--password", "Str0ng-Passw0rd!",
                  "--role", "union_admin", "--org-code", "999900")
    assert rc == 1 and "org_code" in out["errors"]
    assert db_of("membership").accounts.count_documents({}) == 1


def test_python_dash_m_entry_point(config):
    r = subprocess.run([sys.executable, "-m", "unionhub_kit", "--amqp-uri", config["AMQP_URI"], "--json",
                        "outbox", "show", "nosuchservice"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "unknown service" in r.stderr
    r = subprocess.run([sys.executable, "-m", "unionhub_kit", "dlq", "frobnicate"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2


def test_dlq_discard_and_purge_ask_first_and_count(container_factory, config, capsys, monkeypatch):
    con = container_factory(Flaky, config)
    con.start()
    for i in range(4):
        publish_joined(config, "d%d" % i)
    wait_for(lambda: depth(config, QUEUE + ".dlq") == 4 or None, 20)

    # no terminal and no --yes: refused, nothing deleted
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    rc = cli.main(["--amqp-uri", config["AMQP_URI"], "dlq", "discard", QUEUE, "--count", "1"])
    assert rc == 1 and "--yes" in capsys.readouterr().err and depth(config, QUEUE + ".dlq") == 4

    rc, out = run(capsys, config, "dlq", "discard", QUEUE, "--count", "1", "--yes")
    assert rc == 0 and out == {"discarded": 1, "queue": QUEUE + ".dlq"}
    assert depth(config, QUEUE + ".dlq") == 3
    rc, out = run(capsys, config, "dlq", "purge", QUEUE + ".dlq", "--yes")
    assert rc == 0 and out == {"discarded": 3, "queue": QUEUE + ".dlq"}
    assert depth(config, QUEUE + ".dlq") == 0 and depth(config, QUEUE) == 0

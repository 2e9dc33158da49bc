"""The event machinery of the shared kit on the real broker and store: outbox, retry + dead-letter, idempotency."""
import eventlet
import pytest
from nameko.rpc import rpc
from nameko.testing.services import entrypoint_hook

from unionhub_kit import broker, topology
from unionhub_kit.consumer import idempotent, on_event
from unionhub_kit.mongo import Mongo, transaction
from unionhub_kit.outbox import Outbox
from support.stack import wait_for

MEMBER = {"member_id": "m1", "user_id": "u1", "union_id": "g1", "union_code": "5101040001", "region_code": "510104",
          "occupation_group": "courier", "status": "active", "card_no": "C1", "joined_at": "2026-01-01T00:00:00Z",
          "phone_masked": "138****5678"}


class FakeMembership:
    name = "membership"
    db = Mongo()
    outbox = Outbox()

    @rpc
    def join(self, member_id):
        def txn(session):
            self.db.members.insert_one({"_id": member_id}, session=session)
            self.outbox.add(session, "member_joined", dict(MEMBER, member_id=member_id), subject=member_id)
        transaction(self.db, txn)


class SlowRelayMembership:
    """Its relay polls once an hour: only a kick publishes."""
    name = "membership"
    db = Mongo()
    outbox = Outbox(poll_seconds=3600)

    @rpc
    def join_one(self, member_id):
        def txn(session):
            self.db.members.insert_one({"_id": member_id}, session=session)
            self.outbox.add(session, "member_joined", dict(MEMBER, member_id=member_id), subject=member_id)
        transaction(self.db, txn)

    @rpc
    def join_two(self, first, second):
        """Two transactions; between them, wait (up to 30 s) for the first event to be handled elsewhere."""
        for member_id in (first, second):
            def txn(session, member_id=member_id):
                self.db.members.insert_one({"_id": member_id}, session=session)
                self.outbox.add(session, "member_joined", dict(MEMBER, member_id=member_id), subject=member_id)
            transaction(self.db, txn)
            if member_id == first:
                try:
                    wait_for(lambda: self.db.client[self.db.name.replace("_membership", "_kittest")].seen.find_one(
                        {"_id": first}), 30)
                except Exception:
                    return False
        return True


class Counter:
    name = "kittest"
    db = Mongo()
    fail_times = {}
    errors = {}

    @on_event("membership", "member_joined")
    @idempotent
    def on_member_joined(self, event, session):
        mid = event["data"]["member_id"]
        left = Counter.fail_times.get(mid, 0)
        if left:
            Counter.fail_times[mid] = left - 1
            raise Counter.errors.get(mid, RuntimeError)("boom")
        self.db.seen.update_one({"_id": mid}, {"$inc": {"n": 1}}, upsert=True, session=session)


@pytest.fixture(autouse=True)
def kit_subscription():
    sub = topology.Subscription("kittest", "on_member_joined", [("membership", "member_joined")])
    topology.SUBSCRIPTIONS.append(sub)
    yield sub
    topology.SUBSCRIPTIONS.remove(sub)


def publish_join(container_factory, config, member_id):
    """Start the fake membership and the counting consumer; membership joins ``member_id`` (outbox -> event)."""
    pub = container_factory(FakeMembership, config)
    con = container_factory(Counter, config)
    con.start()
    pub.start()
    with entrypoint_hook(pub, "join") as join:
        join(member_id)
    return pub, con


def test_outbox_publishes_and_consumer_applies_once(container_factory, config, db_of):
    publish_join(container_factory, config, "m1")
    seen = db_of("kittest").seen
    wait_for(lambda: seen.find_one({"_id": "m1"}))
    assert db_of("membership").outbox.count_documents({"published_at": None}) == 0
    # redeliver the very same envelope: no second effect
    env = db_of("membership").outbox.find_one()["envelope"]
    from nameko.standalone.events import event_dispatcher
    dispatch = event_dispatcher(config)
    dispatch("membership", "member_joined", env)
    eventlet.sleep(0.5)
    assert seen.find_one({"_id": "m1"})["n"] == 1
    assert db_of("kittest").processed_events.count_documents({}) == 1


def test_an_event_is_published_once_its_transaction_commits_not_when_the_worker_ends(container_factory, config,
                                                                                   db_of):
    """A worker that commits several transactions (a group commit's leader serving batch after batch) has each one's
    events published as soon as it commits: the first is handled while the worker still runs."""
    pub = container_factory(SlowRelayMembership, config)
    con = container_factory(Counter, config)
    con.start()
    pub.start()
    with entrypoint_hook(pub, "join_one") as join_one:  # the relay has started and gone idle, waiting for a kick
        join_one("warm")
    wait_for(lambda: db_of("membership").outbox.count_documents({"published_at": None}) == 0
             and db_of("kittest").seen.find_one({"_id": "warm"}))
    eventlet.sleep(0.5)
    with entrypoint_hook(pub, "join_two") as join_two:
        assert join_two("first", "second") is True
    wait_for(lambda: db_of("kittest").seen.find_one({"_id": "second"}))


def test_failing_handler_is_retried_then_succeeds(container_factory, config, db_of):
    Counter.fail_times["m2"] = 2  # fails twice, EVENT_MAX_ATTEMPTS=3
    publish_join(container_factory, config, "m2")
    wait_for(lambda: db_of("kittest").seen.find_one({"_id": "m2"}))
    assert Counter.fail_times["m2"] == 0


def test_another_service_down_is_retried_not_parked(container_factory, config, db_of):
    """A handler whose RPC to another service is answered 503 (or 504) fails for a passing reason: retried, not
    parked at once like a handler refusing the event, and for longer than a failing handler (make chaos lost welcome
    messages both ways while membership restarted)."""
    from unionhub_kit.errors import ServiceUnavailable
    Counter.fail_times["m5"] = 4  # more than EVENT_MAX_ATTEMPTS (3 here): a passing failure has a longer budget
    Counter.errors["m5"] = ServiceUnavailable
    publish_join(container_factory, config, "m5")
    seen = wait_for(lambda: db_of("kittest").seen.find_one({"_id": "m5"}), 15)
    assert seen["n"] == 1 and Counter.fail_times["m5"] == 0
    sub = topology.find("kittest", "on_member_joined")
    assert broker.get_messages(config["vhost"], topology.queue_name(sub) + topology.DLQ_SUFFIX) == []


def test_handler_failing_every_time_lands_in_dead_letter_queue(container_factory, config, db_of):
    Counter.fail_times["m3"] = 99
    publish_join(container_factory, config, "m3")
    sub = topology.find("kittest", "on_member_joined")
    dlq = topology.queue_name(sub) + topology.DLQ_SUFFIX
    vhost = config["vhost"]

    def parked():
        msgs = broker.get_messages(vhost, dlq)
        return msgs
    msgs = wait_for(parked, 15)
    assert msgs[0]["properties"]["headers"]["x-unionhub-attempts"] == 3
    assert "RuntimeError" in msgs[0]["properties"]["headers"]["x-unionhub-error"]
    assert db_of("kittest").seen.find_one({"_id": "m3"}) is None
    assert Counter.fail_times["m3"] == 99 - 3


def test_event_published_before_consumer_ever_started_is_not_lost(container_factory, config, db_of):
    pub = container_factory(FakeMembership, config)
    pub.start()
    with entrypoint_hook(pub, "join") as join:
        join("m4")
    wait_for(lambda: db_of("membership").outbox.count_documents({"published_at": None}) == 0 or None)
    con = container_factory(Counter, config)  # the consumer starts only now
    con.start()
    wait_for(lambda: db_of("kittest").seen.find_one({"_id": "m4"}))


def test_outbox_event_written_while_broker_unreachable_is_published_later(container_factory, config, db_of):
    # the write lands in the outbox without a publish (as if the process had died); a relay publishes it later
    from unionhub_kit import events, outbox
    env = events.build("membership", "member_joined", dict(MEMBER, member_id="m5"))
    outbox.store(db_of("membership"), env, "member_joined")
    con = container_factory(Counter, config)
    con.start()
    pub = container_factory(FakeMembership, config)
    pub.start()
    wait_for(lambda: db_of("kittest").seen.find_one({"_id": "m5"}))


@pytest.mark.parametrize("body,content_type", [(b'{"not json', "application/json"),
                                               (b"member joined, trust me", "text/plain")])
def test_undecodable_message_is_parked_with_the_reason(container_factory, config, db_of, body, content_type):
    """kombu alone logs "Can't decode message body" and acks: the message was gone. Now it is in the DLQ, as sent."""
    from kombu import Connection
    con = container_factory(Counter, config)
    con.start()
    with Connection(config["AMQP_URI"]) as conn:
        conn.Producer().publish(body, exchange=topology.event_exchange("membership"), routing_key="member_joined",
                                content_type=content_type, content_encoding="utf-8")
    sub = topology.find("kittest", "on_member_joined")
    dlq = topology.queue_name(sub) + topology.DLQ_SUFFIX
    msgs = wait_for(lambda: broker.get_messages(config["vhost"], dlq), 15)
    assert len(msgs) == 1 and msgs[0]["payload"] == body.decode()
    assert msgs[0]["properties"]["content_type"] == content_type
    error = msgs[0]["properties"]["headers"]["x-unionhub-error"]
    assert "undecodable" in error and content_type in error
    assert broker.get_messages(config["vhost"], topology.queue_name(sub)) == []  # not left behind either


def test_a_published_row_is_deleted_unless_kept(container_factory, config, db_of):
    """Production deletes an outbox row once the broker has its event (OUTBOX_KEEP_PUBLISHED false, the default);
    the service tests keep it marked published, to read what a service emitted."""
    publish_join(container_factory, dict(config, OUTBOX_KEEP_PUBLISHED=False), "gone-1")
    wait_for(lambda: db_of("kittest").seen.find_one({"_id": "gone-1"}))  # delivered and applied ...
    wait_for(lambda: db_of("membership").outbox.count_documents({}) == 0)  # ... and its row deleted

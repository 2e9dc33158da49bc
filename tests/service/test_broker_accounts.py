"""Broker accounts by role, on the real RabbitMQ: the integrator account of deploy/rabbitmq/definitions.json (its
permissions applied to a vhost of this test) reads events through queues of its own and nothing else."""
import json
import uuid

import amqp
import pytest
import requests
from kombu import Connection, Exchange, Queue

from deploy import render_manifests
from unionhub_kit import events, topology

API = "http://localhost:15672/api"
GUEST = ("guest", "guest")


@pytest.fixture
def broker():
    """A vhost with UnionHub's topology, and the integrator account with the definitions' permissions on it."""
    vhost, user, password = "uh_acc_%s" % uuid.uuid4().hex[:8], "integrator_%s" % uuid.uuid4().hex[:6], "pw-" + \
        uuid.uuid4().hex
    requests.put("%s/vhosts/%s" % (API, vhost), auth=GUEST, timeout=10).raise_for_status()
    requests.put("%s/permissions/%s/guest" % (API, vhost), auth=GUEST, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    defs = render_manifests.definitions()
    [perm] = [p for p in defs["permissions"] if p["user"] == render_manifests.INTEGRATOR_USER]
    requests.put("%s/users/%s" % (API, user), auth=GUEST, timeout=10,
                 json={"password": password, "tags": ""}).raise_for_status()
    requests.put("%s/permissions/%s/%s" % (API, vhost, user), auth=GUEST, timeout=10, json={
        k: perm[k] for k in ("configure", "write", "read")}).raise_for_status()
    admin_uri = "amqp://guest:guest@localhost:5672/%s" % vhost
    topology.declare_uri(admin_uri)
    with Connection(admin_uri) as c:  # the RPC exchange and a service's RPC queue, as nameko declares them
        rpc = Exchange("nameko-rpc", type="topic", durable=True)
        Queue("rpc-membership", rpc, routing_key="membership.*", durable=True)(c.channel()).declare()
    yield admin_uri, "amqp://%s:%s@localhost:5672/%s" % (user, password, vhost)
    requests.delete("%s/vhosts/%s" % (API, vhost), auth=GUEST, timeout=10)
    requests.delete("%s/users/%s" % (API, user), auth=GUEST, timeout=10)


def refused(fn):
    with pytest.raises(amqp.exceptions.AccessRefused):
        fn()


def test_integrator_reads_events_through_its_own_queues_and_nothing_else(broker):
    admin_uri, integrator_uri = broker
    with Connection(integrator_uri) as conn:
        mine = Queue("integrator.acme", Exchange("membership.events", type="topic", durable=True, passive=True),
                     routing_key="member_joined", durable=True, auto_delete=False)
        mine(conn.channel()).declare()
        env = events.build("membership", "member_joined", {
            "member_id": "mbr_1", "user_id": "usr_1", "union_id": "un_5101040001", "union_code": "5101040001",
            "region_code": "510104", "occupation_group": "courier", "status": "active", "card_no": "SC1",
            "joined_at": "2026-01-01T00:00:00.000Z", "phone_masked": "138****5678"})
        with Connection(admin_uri) as admin:
            admin.Producer().publish(json.dumps(env), exchange="membership.events", routing_key="member_joined")
        msg = None
        for _ in range(50):
            msg = mine(conn.channel()).get(no_ack=True)
            if msg:
                break
            import time
            time.sleep(0.1)
        assert msg is not None and json.loads(msg.body)["data"]["member_id"] == "mbr_1"

    def bind_to_rpc():  # the RPC exchange carries full ID numbers and login codes
        with Connection(integrator_uri) as c:
            Queue("integrator.spy", Exchange("nameko-rpc", type="topic", durable=True, passive=True),
                  routing_key="#", durable=True)(c.channel()).declare()

    def read_rpc_queue():
        with Connection(integrator_uri) as c:
            c.channel().basic_get("rpc-membership")

    def publish_event():  # forging an event
        with Connection(integrator_uri) as c:
            ch = c.channel()
            ch.confirm_select()
            ch.basic_publish(amqp.Message(json.dumps(env)), exchange="membership.events", routing_key="member_joined")
            ch.wait(amqp.spec.Basic.Ack, timeout=5)

    def someone_elses_queue():
        with Connection(integrator_uri) as c:
            Queue("evt-benefits-spy", durable=True)(c.channel()).declare()

    for attempt in (bind_to_rpc, read_rpc_queue, publish_event, someone_elses_queue):
        refused(attempt)


@pytest.fixture
def service_uri(broker):
    """A service account (``uh-benefits``'s permissions of the definitions) on the broker fixture's vhost."""
    admin_uri, _ = broker
    vhost = admin_uri.rsplit("/", 1)[1]
    user, password = "uh_svc_%s" % uuid.uuid4().hex[:6], "pw-" + uuid.uuid4().hex
    [perm] = [p for p in render_manifests.definitions()["permissions"] if p["user"] == "uh-benefits"]
    requests.put("%s/users/%s" % (API, user), auth=GUEST, timeout=10,
                 json={"password": password, "tags": ""}).raise_for_status()
    requests.put("%s/permissions/%s/%s" % (API, vhost, user), auth=GUEST, timeout=10, json={
        k: perm[k] for k in ("configure", "write", "read")}).raise_for_status()
    yield "amqp://%s:%s@localhost:5672/%s" % (user, password, vhost)
    requests.delete("%s/users/%s" % (API, user), auth=GUEST, timeout=10)


def test_a_service_account_may_serve_and_call_through_the_affinity_exchange_and_the_integrator_may_not(
        broker, service_uri):
    """``unionhub_kit.affinity`` under the definitions' permissions: a service declares the exchange (with
    ``nameko-rpc`` as its alternate exchange), binds a replica's queue and publishes to it; the integrator can
    neither bind a queue of its own to it (claims carry member identities) nor publish to it."""
    from unionhub_kit import affinity
    _, integrator_uri = broker
    ex = affinity.exchange("benefits", "nameko-rpc")
    assert affinity.declare(service_uri, ex, "test")
    with Connection(service_uri) as conn:
        mine = Queue(affinity.queue_name("benefits", uuid.uuid4().hex[:12]), ex, routing_key=affinity.WEIGHT,
                     durable=False, exclusive=True, auto_delete=True)
        bound = mine(conn.channel())
        bound.declare()
        conn.Producer().publish({"args": [], "kwargs": {}}, exchange=ex.name, routing_key="benefits.claim_many",
                                headers={affinity.HEADER: "cmp_1"}, serializer="json")
        msg = None
        for _ in range(50):
            msg = bound.get(no_ack=True)
            if msg:
                break
            import time
            time.sleep(0.1)
        assert msg is not None and msg.delivery_info["routing_key"] == "benefits.claim_many"

    def spy():
        with Connection(integrator_uri) as c:
            Queue("integrator.spy", Exchange(ex.name, type=ex.type, durable=True, passive=True),
                  routing_key=affinity.WEIGHT, durable=True)(c.channel()).declare()

    def forge():
        with Connection(integrator_uri) as c:
            ch = c.channel()
            ch.confirm_select()
            ch.basic_publish(amqp.Message("{}"), exchange=ex.name, routing_key="benefits.claim_many")
            ch.wait(amqp.spec.Basic.Ack, timeout=5)

    for attempt in (spy, forge):
        refused(attempt)

"""Integrator webhooks on the real broker and store: matching events POSTed as CloudEvents JSON with an HMAC
signature the receiver verifies, retries with backoff, the final failure, the delivery log, replay, ownership."""
import socket
import urllib.parse

import pytest
from nameko.testing.services import entrypoint_hook

from support.stack import management, wait_for
from unionhub_kit import broker, topology
from tests.service.notify_support import (Receiver, joined, new_user, notify_config, notify_container, publish, signature_ok)
from unionhub_kit.errors import NotFound, ValidationFailed

SECRET = "whsec-0123456789"
ACME = {"sub": "acc_acme", "role": "integrator"}
OTHER = {"sub": "acc_other", "role": "integrator"}


@pytest.fixture(autouse=True)
def offline_resolution(monkeypatch):
    """Webhook hosts are resolved without asking any name server (this machine's is a private address, and tests
    send nothing off 127.0.0.0/8): address literals and ``localhost`` resolve as usual, every other name fails."""
    from services.notify import domain

    def resolve(host, port, proto=None):
        host = "127.0.0.1" if host == "localhost" else host
        return socket.getaddrinfo(host, port, proto=proto or 0, flags=socket.AI_NUMERICHOST)
    monkeypatch.setattr(domain, "resolve_host", resolve)


@pytest.fixture
def receiver():
    made = []

    def make(**kw):
        r = Receiver(**kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def start(container_factory, cfg):
    c = notify_container(container_factory, cfg)
    c.start()
    return c


def register(container, url, types, actor=ACME, secret=SECRET):
    with entrypoint_hook(container, "create_webhook") as create:
        return create(actor, {"url": url, "event_types": types, "secret": secret})


def deliveries(container, hook_id, actor=ACME, **query):
    with entrypoint_hook(container, "list_deliveries") as listing:
        return listing(actor, hook_id, query)["items"]


def test_matching_events_are_posted_signed(container_factory, config, tmp_path, db_of, receiver):
    cfg = notify_config(config, tmp_path)
    notify = start(container_factory, cfg)
    r = receiver()
    hook = register(notify, r.url, ["member_joined", "benefits.coupon_claimed"])
    assert hook["event_types"] == ["membership.member_joined", "benefits.coupon_claimed"]
    assert "secret" not in hook and SECRET not in str(db_of("notify").webhooks.find_one())
    uid = new_user()
    env = publish(cfg, "membership", "member_joined", joined(uid))
    publish(cfg, "benefits", "coupon_redeemed", {  # not subscribed
        "coupon_id": "c1", "campaign_id": "k1", "user_id": uid, "merchant_id": "m1", "title": "t",
        "face_value_cents": 100, "redeemed_at": "2026-06-01T00:00:00.000Z"})
    publish(cfg, "benefits", "coupon_claimed", {
        "coupon_id": "c1", "campaign_id": "k1", "user_id": uid, "title": "t", "face_value_cents": 100,
        "expires_at": "2026-12-31T00:00:00.000Z"})
    wait_for(lambda: len(r.requests) >= 2)
    by_type = {r.json(i)["type"]: r.requests[i] for i in range(len(r.requests))}
    assert set(by_type) == {"org.unionhub.membership.member_joined.v1", "org.unionhub.benefits.coupon_claimed.v1"}
    req = by_type["org.unionhub.membership.member_joined.v1"]
    assert signature_ok(req, SECRET)
    assert not signature_ok(req, SECRET + "x")
    assert req["headers"]["Content-Type"].startswith("application/cloudevents+json")
    sent = r.json(list(by_type.values()).index(req))
    assert sent["id"] == env["id"] and sent["specversion"] == "1.0" and sent["source"] == "/unionhub/membership"
    assert sent["data"]["user_id"] == uid and sent["data"]["card_no"] == env["data"]["card_no"]
    log = wait_for(lambda: (lambda items: len(items) == 2 and all(i["status"] == "delivered" for i in items)
                            and items)(deliveries(notify, hook["id"])))
    assert {i["event_id"] for i in log} >= {env["id"]}
    assert all(i["attempts"] == 1 and i["last_status"] == 200 and i["last_error"] is None for i in log)


def test_failures_retried_with_backoff_then_failed_then_replayed(container_factory, config, tmp_path, receiver):
    cfg = notify_config(config, tmp_path, WEBHOOK_MAX_ATTEMPTS=3)
    notify = start(container_factory, cfg)
    flaky, down = receiver(fail_first=2), receiver(fail_first=None, fail_status=502)
    ok_hook = register(notify, flaky.url, ["membership.member_left"])
    bad_hook = register(notify, down.url, ["membership.member_left"])
    publish(cfg, "membership", "member_left", {"member_id": "m", "user_id": new_user(), "union_id": "g1",
                                               "erased": False})
    [ok] = wait_for(lambda: [d for d in deliveries(notify, ok_hook["id"]) if d["status"] == "delivered"])
    assert ok["attempts"] == 3 and ok["last_status"] == 200 and len(flaky.requests) == 3
    assert len({req["body"] for req in flaky.requests}) == 1  # the same body each time
    [bad] = wait_for(lambda: [d for d in deliveries(notify, bad_hook["id"]) if d["status"] == "failed"])
    assert bad["attempts"] == 3 and bad["last_status"] == 502 and bad["last_error"] == "HTTP 502"
    assert len(down.requests) == 3  # bounded
    assert deliveries(notify, bad_hook["id"], status="failed") == [bad]
    assert deliveries(notify, bad_hook["id"], status="delivered") == []

    down.fail_first = 0  # the integrator fixed their endpoint
    with entrypoint_hook(notify, "replay_delivery") as replay:
        again = replay(ACME, bad_hook["id"], bad["id"])
        assert again["status"] == "pending" and again["replays"] == 1
        with pytest.raises(NotFound):
            replay(ACME, ok_hook["id"], bad["id"])  # not a delivery of that webhook
    [fixed] = wait_for(lambda: [d for d in deliveries(notify, bad_hook["id"]) if d["status"] == "delivered"])
    assert fixed["id"] == bad["id"] and fixed["last_status"] == 200 and len(down.requests) == 4


def test_ownership_and_bad_registrations(container_factory, config, tmp_path, receiver):
    notify = start(container_factory, notify_config(config, tmp_path))
    r = receiver()
    hook = register(notify, r.url, ["member_joined"])
    with pytest.raises(NotFound):
        deliveries(notify, hook["id"], actor=OTHER)
    with entrypoint_hook(notify, "list_webhooks") as listing:
        assert [h["id"] for h in listing(ACME, {})["items"]] == [hook["id"]]
        assert listing(OTHER, {})["items"] == []
    with pytest.raises(ValidationFailed) as exc:
        register(notify, r.url, ["member_exploded"])
    assert "event_types" in exc.value.errors
    with pytest.raises(ValidationFailed) as exc:
        register(notify, "https://nowhere.invalid/hook", ["member_joined"])
    assert "url" in exc.value.errors
    with entrypoint_hook(notify, "delete_webhook") as delete:
        with pytest.raises(NotFound):
            delete(OTHER, hook["id"])
        delete(ACME, hook["id"])
    with pytest.raises(NotFound):
        deliveries(notify, hook["id"])


def test_private_targets_refused_unless_allowed(container_factory, config, tmp_path, receiver, db_of):
    """Refused by resolution and validation at registration: nothing is stored, so nothing is ever sent there."""
    notify = start(container_factory, notify_config(config, tmp_path, WEBHOOK_ALLOW_PRIVATE="0"))
    for url in (receiver().url, "http://localhost:9/x", "http://10.0.0.8/x", "http://169.254.169.254/latest"):
        with pytest.raises(ValidationFailed) as exc:
            register(notify, url, ["member_joined"])
        assert "private" in exc.value.errors["url"][0]
    assert db_of("notify").webhooks.count_documents({}) == 0
    assert db_of("notify").webhook_deliveries.count_documents({}) == 0


def test_a_redelivered_event_is_delivered_to_a_webhook_once(container_factory, config, tmp_path, db_of, receiver):
    """The same envelope twice (a redelivery) makes one delivery; events nobody subscribes to write nothing."""
    from nameko.standalone.events import event_dispatcher
    from unionhub_kit import events
    cfg = notify_config(config, tmp_path)
    notify = start(container_factory, cfg)
    r = receiver()
    hook = register(notify, r.url, ["member_joined"])
    uid = new_user()
    env = events.build("membership", "member_joined", joined(uid))
    dispatch = event_dispatcher(cfg)
    dispatch("membership", "member_joined", env)
    dispatch("membership", "member_joined", env)
    publish(cfg, "benefits", "coupon_redeemed", {  # no subscriber
        "coupon_id": "c1", "campaign_id": "k1", "user_id": uid, "merchant_id": "m1", "title": "t",
        "face_value_cents": 100, "redeemed_at": "2026-06-01T00:00:00.000Z"})
    db = db_of("notify")
    wait_for(lambda: db.processed_events.count_documents({"_id": {"$regex": "^on_member_joined\\|"}}) == 1)
    wait_for(lambda: len(r.requests) >= 1)
    assert db.webhook_deliveries.count_documents({"webhook_id": hook["id"]}) == 1
    assert len(deliveries(notify, hook["id"])) == 1 and len(r.requests) == 1
    assert db.processed_events.count_documents({"_id": {"$regex": "^on_any_event\\|"}}) == 1  # not the unsubscribed one


def test_the_webhook_queue_is_routed_only_the_event_types_webhooks_want(container_factory, config, tmp_path,
                                                                        receiver):
    """Most event types have no webhook: the broker does not route them to notify's webhook queue at all (a grab's
    coupon_claimed events cost no second copy). A registration binds its types before it is answered; a deletion
    unbinds what no webhook wants any more; the timer (and each start) makes the bindings those of the store."""
    cfg = notify_config(config, tmp_path)
    notify = start(container_factory, cfg)
    queue = topology.queue_name(topology.find("notify", "on_any_event"))
    path = "queues/%s/%s/bindings" % (urllib.parse.quote(broker.vhost_of(cfg["AMQP_URI"]), safe=""),
                                      urllib.parse.quote(queue, safe=""))

    def routed():
        return {(b["source"], b["routing_key"]) for b in management("GET", path).json() if b["source"]}
    assert wait_for(lambda: routed() == set(), 10)  # no webhook: nothing is routed there
    r = receiver()
    one = register(notify, r.url, ["member_joined"])
    assert routed() == {("membership.events", "member_joined")}  # bound before the registration was answered
    two = register(notify, r.url, ["membership.member_joined", "coupon_claimed"], actor=OTHER)
    assert routed() == {("membership.events", "member_joined"), ("benefits.events", "coupon_claimed")}
    uid = new_user()
    publish(cfg, "membership", "member_joined", joined(uid))
    wait_for(lambda: len(r.requests) >= 2)  # both webhooks got it
    with entrypoint_hook(notify, "delete_webhook") as delete:
        delete(OTHER, two["id"])
    assert routed() == {("membership.events", "member_joined")}
    with entrypoint_hook(notify, "delete_webhook") as delete:
        delete(ACME, one["id"])
    assert routed() == set()


def test_a_registration_the_broker_cannot_route_yet_is_a_503_and_its_replay_routes_it(
        container_factory, config, tmp_path, receiver, monkeypatch):
    """The webhook is stored but binding its types fails (the broker away): 503, not 201 (its events would not reach
    it); the same Idempotency-Key again, once the broker answers, binds them and answers the stored webhook."""
    from services.notify import routing
    from unionhub_kit.errors import ServiceUnavailable
    notify = start(container_factory, notify_config(config, tmp_path))
    body = {"url": receiver().url, "event_types": ["member_joined"], "secret": SECRET}
    real_want = routing.want

    def broker_away(*a, **kw):
        raise ConnectionRefusedError("broker away")
    monkeypatch.setattr(routing, "want", broker_away)
    with entrypoint_hook(notify, "create_webhook") as create:
        with pytest.raises(ServiceUnavailable):
            create(ACME, body, "key-1")
    monkeypatch.setattr(routing, "want", real_want)
    with entrypoint_hook(notify, "create_webhook") as create:
        again = create(ACME, body, "key-1")
    assert again["event_types"] == ["membership.member_joined"]
    with entrypoint_hook(notify, "list_webhooks") as listing:
        assert [h["id"] for h in listing(ACME, {})["items"]] == [again["id"]]

"""gateway.cache_events on the real broker: a gateway process hears benefits' stock events on a queue of its own and
drops the cached answers of that campaign (and the lists), shrugs off a forged or undecodable event, forgets every
campaign answer when its connection is lost and subscribes again; the gateway's broker account may do all that."""
import urllib.parse
import uuid

import requests
from kombu import Connection
from nameko.rpc import rpc

from deploy import render_manifests
from gateway import cache_events
from gateway.framework import READ_CACHE
from support.stack import management, wait_for
from unionhub_kit import broker, events, topology

API = "http://localhost:15672/api"
GUEST = ("guest", "guest")


class Gateway:
    name = "gateway"
    cache_events = cache_events.CacheEvents()

    @rpc
    def ping(self):
        return True


def claimed(campaign_id):
    return events.build("benefits", "coupon_claimed", {
        "coupon_id": "cpn_%s" % uuid.uuid4().hex[:8], "campaign_id": campaign_id, "user_id": "usr_1",
        "title": "满50减10", "face_value_cents": 1000, "expires_at": "2027-01-01T00:00:00.000Z"})


def publish(amqp_uri, body, event="coupon_claimed", content_type=None):
    with Connection(amqp_uri) as conn:
        producer = conn.Producer(serializer="json")
        kw = {"content_type": content_type, "content_encoding": "utf-8"} if content_type else {}
        producer.publish(body, exchange=topology.event_exchange("benefits"), routing_key=event, **kw)


def cached(path):
    """A cached answer of ``path``, as a read through the gateway leaves it; its key."""
    key = (path, b"")
    READ_CACHE.put(key, b'{"remaining": 5}', 60.0, READ_CACHE.stamp(path), 0)
    return key


def test_stock_events_drop_that_campaign_and_the_lists_and_a_lost_connection_forgets_and_resubscribes(
        container_factory, config):
    container = container_factory(Gateway, config)
    container.start()
    wait_for(cache_events.live, what="subscribed")
    uri = config["AMQP_URI"]
    one, other, listed = cached("/api/v1/campaigns/cmp_a"), cached("/api/v1/campaigns/cmp_b"), cached(
        "/api/v1/campaigns")
    unions = cached("/api/v1/unions")

    publish(uri, claimed("cmp_a"))
    wait_for(lambda: one not in READ_CACHE.entries, what="cmp_a dropped")
    assert listed not in READ_CACHE.entries and other in READ_CACHE.entries and unions in READ_CACHE.entries

    # forged or broken events change nothing and stop nothing; the next good one (same queue: in order) is heard
    listed = cached("/api/v1/campaigns")
    publish(uri, {"data": {"campaign_id": 5}})
    publish(uri, {"data": {"campaign_id": "x" * 500}})
    publish(uri, "not an envelope")
    publish(uri, b"\xff{", content_type="application/json")
    publish(uri, {"data": {"campaign_id": "cmp_b"}}, event="coupon_redeemed")  # not bound: never arrives
    assert other in READ_CACHE.entries and listed in READ_CACHE.entries
    publish(uri, {"data": {"campaign_id": "cmp_b"}}, event="campaign_sold_out")
    wait_for(lambda: other not in READ_CACHE.entries, what="cmp_b dropped")
    assert cache_events.live() and unions in READ_CACHE.entries

    # the broker closes the connection: every campaign answer is forgotten (events were missed), then a new queue
    kept = cached("/api/v1/campaigns/cmp_c")
    vhost = urllib.parse.quote(broker.vhost_of(uri), safe="")

    def ours():
        return [c["name"] for c in management("GET", "vhosts/%s/connections" % vhost).json()
                if (c.get("client_properties") or {}).get("connection_name", "").startswith(cache_events.QUEUE_PREFIX)]
    [conn_name] = wait_for(ours, what="the subscription's connection listed")
    management("DELETE", "connections/%s" % urllib.parse.quote(conn_name, safe=""))
    wait_for(lambda: kept not in READ_CACHE.entries, what="campaign answers forgotten")
    wait_for(cache_events.live, what="subscribed again")
    again = cached("/api/v1/campaigns/cmp_c")
    publish(uri, claimed("cmp_c"))
    wait_for(lambda: again not in READ_CACHE.entries, what="cmp_c dropped after resubscribing")
    container.stop()
    assert not cache_events.live()


def test_the_gateway_broker_account_may_subscribe(rabbit_config):
    """deploy/rabbitmq/definitions.json's uh-gateway permissions declare, bind and read the gateway's own queue."""
    uri = rabbit_config["AMQP_URI"]
    vhost = broker.vhost_of(uri)
    [perm] = [p for p in render_manifests.definitions()["permissions"] if p["user"] == "uh-gateway"]
    user, password = "uh-gateway-%s" % uuid.uuid4().hex[:6], "pw-" + uuid.uuid4().hex
    requests.put("%s/users/%s" % (API, user), auth=GUEST, timeout=10,
                 json={"password": password, "tags": ""}).raise_for_status()
    try:
        requests.put("%s/permissions/%s/%s" % (API, urllib.parse.quote(vhost, safe=""), user), auth=GUEST,
                     timeout=10, json={k: perm[k] for k in ("configure", "write", "read")}).raise_for_status()
        topology.declare_uri(uri)
        ours = cache_events.CacheEvents()
        ours.queue_name = cache_events.QUEUE_PREFIX + "test." + uuid.uuid4().hex[:8]
        parsed = urllib.parse.urlparse(uri)
        user_uri = parsed._replace(netloc="%s:%s@%s:%s" % (user, password, parsed.hostname, parsed.port or 5672))
        with Connection(user_uri.geturl()) as conn:
            queue = ours.queue()(conn.channel())
            queue.declare()
            publish(uri, claimed("cmp_perm"))
            msg = wait_for(lambda: queue.get(no_ack=True), what="the event in the gateway's queue")
            assert msg.payload["data"]["campaign_id"] == "cmp_perm"
    finally:
        requests.delete("%s/users/%s" % (API, user), auth=GUEST, timeout=10)

"""Independent scaling: two replicas of one service (started the way ``NOTIFY_REPLICAS=2 make run`` starts them)
share its RPC queue and its event queues as competing consumers, both do some of the work, and nothing is done
twice."""
import collections
import eventlet
import time
import uuid
import urllib.parse

import pytest
import requests
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy

from unionhub_kit import clock, events, topology
from support.stack import wait_for

pytestmark = pytest.mark.e2e

N_EVENTS = 40
N_CALLS = 40


def joined(i):
    user = "usr_scale_%03d" % i
    phone = "1390000%04d" % i
    return events.build("membership", "member_joined", {
        "member_id": "mbr_scale_%03d" % i, "user_id": user, "union_id": "uni_scale", "union_code": "5101040099",
        "region_code": "510104", "occupation_group": "courier", "status": "active", "card_no": "C%06d" % i,
        "joined_at": events.rfc3339(clock.now()), "phone_masked": phone[:3] + "****" + phone[-4:]},
        subject="mbr_scale_%03d" % i)


def queue_stats(amqp_uri, queue):
    vhost = urllib.parse.unquote(urllib.parse.urlparse(amqp_uri).path.lstrip("/")) or "/"
    r = requests.get("http://localhost:15672/api/queues/%s/%s" % (urllib.parse.quote(vhost, safe=""),
                                                                  urllib.parse.quote(queue, safe="")),
                     auth=("guest", "guest"), timeout=10)
    r.raise_for_status()
    return r.json()


def test_two_replicas_share_rpc_and_event_work_and_process_nothing_twice(make_stack):
    st = make_stack(replicas={"notify": 2})
    assert len(st.stack.procs["notify"]) == 2 and len(st.stack.procs["membership"]) == 1
    amqp = st.env["AMQP_URI"]

    # RPC: one queue, two consumers; every call answered once, by one replica or the other
    assert wait_for(lambda: queue_stats(amqp, "rpc-notify").get("consumers") == 2, 30)
    with ClusterRpcProxy({"AMQP_URI": amqp, "serializer": "json"}, timeout=10) as cluster:
        answers = [cluster.notify.ping() for _ in range(N_CALLS)]
        pending = [cluster.notify.ping.call_async() for _ in range(N_CALLS)]
        answers += [p.result() for p in pending]
        # an integrator subscribed to member_joined, so the catch-all webhook handler has work for every event
        # (events nobody subscribes to it answers without writing anything); the URL refuses connections
        cluster.notify.create_webhook({"sub": "acc_scaling", "role": "integrator"}, {
            "url": "http://127.0.0.1:9/hook", "event_types": ["member_joined"], "secret": "whsec-0123456789"})
    by_replica = collections.Counter(a["replica"] for a in answers)
    assert set(by_replica) == {"notify-0", "notify-1"}, by_replica
    assert sum(by_replica.values()) == 2 * N_CALLS
    assert len({a["pid"] for a in answers}) == 2

    # events: publish N member_joined straight to membership's exchange (as its outbox relay would)
    queue = topology.queue_name(topology.find("notify", "on_member_joined"))
    assert wait_for(lambda: queue_stats(amqp, queue).get("consumers") == 2, 30)
    sent = [joined(i) for i in range(N_EVENTS)]
    with Connection(amqp, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer(serializer="json")
        for env in sent:
            producer.publish(env, exchange=topology.event_exchange("membership"), routing_key="member_joined",
                             headers={"nameko.event_id": env["id"]}, message_id=env["id"], retry=True)

    db = st.db("notify")
    keys = ["on_member_joined|/unionhub/membership|%s" % env["id"] for env in sent]
    done = lambda: db.processed_events.count_documents({"_id": {"$in": keys}}) == N_EVENTS  # noqa: E731
    assert wait_for(done, 60), db.processed_events.count_documents({"_id": {"$in": keys}})
    records = list(db.processed_events.find({"_id": {"$in": keys}}))
    by = collections.Counter(r["by"] for r in records)
    assert set(by) == {"notify-0", "notify-1"}, by  # both replicas did some of the work
    assert sum(by.values()) == N_EVENTS

    # nothing done twice: one welcome inbox entry per member, and the broker delivered each message once
    users = [env["data"]["user_id"] for env in sent]
    assert wait_for(lambda: db.notifications.count_documents({"user_id": {"$in": users}}) >= N_EVENTS, 20)
    time.sleep(1.0)
    per_user = collections.Counter(n["user_id"] for n in db.notifications.find({"user_id": {"$in": users}}))
    assert per_user == {u: 1 for u in users}, per_user
    assert db.members.count_documents({"_id": {"$in": users}}) == N_EVENTS

    def delivered_once():
        stats = queue_stats(amqp, queue)
        ms = stats.get("message_stats") or {}
        return stats if ms.get("ack", 0) >= N_EVENTS else None
    stats = wait_for(delivered_once, 30, 1.0)  # management statistics refresh every few seconds
    assert stats, "the broker did not report the acks"
    ms = stats["message_stats"]
    assert ms.get("redeliver", 0) == 0
    assert ms.get("deliver_get", ms.get("deliver", 0)) == N_EVENTS
    assert stats.get("messages", 0) == 0

    # ... and the catch-all webhook handler of the same replicas saw each event once too
    any_keys = ["on_any_event|/unionhub/membership|%s" % env["id"] for env in sent]
    assert wait_for(lambda: db.processed_events.count_documents({"_id": {"$in": any_keys}}) == N_EVENTS, 30)
    event_ids = [env["id"] for env in sent]
    assert db.webhook_deliveries.count_documents({"event_id": {"$in": event_ids}}) == N_EVENTS


def test_the_claims_of_a_campaign_go_to_one_benefits_replica_and_campaigns_spread_over_both(make_stack):
    """Campaign affinity through the gateway (``unionhub_kit.affinity``), with two benefits processes: 16 campaigns,
    3 claims each one after the other, each answered 201. Each campaign's stock was taken by one process only (its
    ``stock_taken`` tallies, one document per campaign and process), and both processes took some campaigns: all 16
    on one process has probability 2 * (1/2)**16 = 1 in 32,768 (the consistent hash splits keys about evenly over
    one bucket per replica). Without affinity the two replicas take the shared queue's calls in turn."""
    from support import builders, client
    from unionhub_kit import tokens
    st = make_stack(replicas={"benefits": 2})
    assert wait_for(lambda: queue_stats(st.env["AMQP_URI"], "rpc-benefits").get("consumers") == 2, 30)
    admin = client.admin_token(st)
    merchant = client.new_merchant(st, admin)
    chengdu = {"region_codes": ["5101"], "occupation_groups": [], "union_ids": []}
    campaigns = [client.new_campaign(st, merchant["id"], admin, quota=10, per_member_limit=3, eligibility=chengdu)["id"]
                 for _ in range(16)]
    user = "usr_%s" % uuid.uuid4().hex[:12]
    client.project(st, [builders.joined_event(user)])
    token = tokens.issue(user, "member")
    for cid in campaigns:
        for _ in range(3):
            r = client.post(st, "/api/v1/campaigns/%s/claims" % cid, token)
            assert r.status_code == 201, r.text
    tallies = list(st.db("benefits").stock_taken.find({"campaign_id": {"$in": campaigns}}))
    by_campaign = collections.defaultdict(set)
    for t in tallies:
        assert t["taken"] == 3, t
        by_campaign[t["campaign_id"]].add(t["_id"].split("|", 1)[1])
    assert sorted(by_campaign) == sorted(campaigns) and all(len(p) == 1 for p in by_campaign.values()), by_campaign
    assert len(set.union(*by_campaign.values())) == 2, by_campaign


def test_with_claim_shards_one_campaigns_claims_are_decided_by_both_replicas_and_stay_exact(make_stack):
    """``CLAIM_AFFINITY_SHARDS=16`` (gateway): one campaign's members are split into 16 affinity keys
    (``gateway.routes.benefits.claim_key``), each hashed to one of the two benefits processes, so both decide some of
    the campaign's claims (every shard on one process: 2 * (1/2)**16 = 1 in 32,768). 160 members, 16 at a time,
    claim a campaign of 100: exactly 100 coupons, at most one each, 60 answered SOLD_OUT, and both processes' stock
    tallies add up to the 100 issued."""
    from support import builders, client
    from unionhub_kit import tokens
    st = make_stack(replicas={"benefits": 2}, extra_env={"CLAIM_AFFINITY_SHARDS": "16"})
    assert wait_for(lambda: queue_stats(st.env["AMQP_URI"], "rpc-benefits").get("consumers") == 2, 30)
    admin = client.admin_token(st)
    merchant = client.new_merchant(st, admin)
    chengdu = {"region_codes": ["5101"], "occupation_groups": [], "union_ids": []}
    cid = client.new_campaign(st, merchant["id"], admin, quota=100, per_member_limit=1, eligibility=chengdu)["id"]
    users = ["usr_%s" % uuid.uuid4().hex[:12] for _ in range(160)]
    client.project(st, [builders.joined_event(u) for u in users])
    pool = eventlet.GreenPool(16)
    answers = list(pool.imap(lambda u: client.post(st, "/api/v1/campaigns/%s/claims" % cid, tokens.issue(u, "member")),
                             users))
    codes = collections.Counter(r.status_code if r.status_code == 201 else r.json()["code"] for r in answers)
    assert codes == {201: 100, "SOLD_OUT": 60}, codes
    coupons = list(st.db("benefits").coupons.find({"campaign_id": cid}, {"user_id": 1}))
    assert len(coupons) == 100 and len({c["user_id"] for c in coupons}) == 100
    tallies = {t["_id"].split("|", 1)[1]: t["taken"] for t in st.db("benefits").stock_taken.find({"campaign_id": cid})}
    assert len(tallies) == 2 and sum(tallies.values()) == 100, tallies

"""The gateway's read path at 32 concurrent keep-alive connections: HTTP -> route table -> RPC -> service -> store.

* ``GET /api/v1/unions?level=prefecture``  (membership: 21 prefecture unions, first page of 20)
* ``GET /api/v1/campaigns``                 (benefits: live campaigns with ``remaining``; 10 are created first)
* ``GET /api/v1/campaigns/{id}``            (benefits: one campaign)
* the gateway's CPU per stock event (``gateway.cache_events``: each ``coupon_claimed`` reaches every gateway
  process, which drops that campaign's cached answers): ``BENCH_CACHE_EVENTS`` (default 2000) envelopes published
  on ``benefits.events``, the gateway process's CPU over them (idle subtracted) per event.

Live campaigns are kept by the gateway for at most a second while it hears benefits' stock events, so the campaign
reads here are answered from the gateway process (one RPC per second and per key) as ``/unions`` are.

    python -m bench.gateway_read     # its own stack

Sizes: ``BENCH_DURATION`` (seconds per route, default 10), ``BENCH_CONCURRENCY`` (default 32).
"""
from bench import common  # noqa: I001  (monkey-patches first)

import time  # noqa: E402
import urllib.parse  # noqa: E402

import eventlet  # noqa: E402
import requests  # noqa: E402
from kombu import Connection  # noqa: E402

from support.stack import wait_for  # noqa: E402
from unionhub_kit import broker, events, topology  # noqa: E402

ROUTES = [("unions", "/api/v1/unions?level=prefecture"), ("campaigns", "/api/v1/campaigns"),
          ("campaign", None)]


def run(st=None):
    own = st is None
    if own:
        st = common.start_stack()
    seconds, conc = common.duration(), common.concurrency()
    res = {}
    try:
        from support import client
        campaign_id = None
        try:
            admin = client.admin_token(st)
            campaigns = [common.create_campaign(st, admin, quota=1000) for _ in range(10)]
            campaign_id = campaigns[0]["id"]
        except Exception as exc:  # benefits not there yet: the unions figure alone
            common.say("gateway_read: no campaigns (%s)" % exc)
        for name, path in ROUTES:
            if path is None:
                if campaign_id is None:
                    continue
                path = "/api/v1/campaigns/%s" % campaign_id
            r = requests.get(st.url + path, timeout=15)
            if r.status_code != 200:
                common.say("gateway_read: %s answers %s; skipped" % (path, r.status_code))
                continue
            common.say("gateway_read: GET %s for %ss at %d connections ..." % (path, seconds, conc))
            common.http_load(lambda h, i, p=path: h.get(p), st.url, concurrency=conc, duration=1.0)  # warm-up
            out = common.measured_load(st, lambda p=path: common.http_load(
                lambda h, i: h.get(p), st.url, concurrency=conc, duration=seconds))
            out["path"] = path
            res[name] = out
        if campaign_id is not None:
            res["campaign_during_claims"] = during_claims(st, admin, seconds, conc)
            res["cache_events"] = event_cost(st, campaign_id, common.env_int("BENCH_CACHE_EVENTS", 2000))
    finally:
        if own:
            st.stop()
    common.write_result("gateway_read", res)
    return res


CLAIMERS = 8


def during_claims(st, admin, seconds, conc):
    """``GET /campaigns/{id}`` at ``conc`` connections while ``CLAIMERS`` connections claim coupons of the same
    campaign through the same gateway: each claim (201) drops the cached answer, and so does its ``coupon_claimed``
    event, so the reads are fresh far more often than once a second."""
    from support import client
    campaign = common.create_campaign(st, admin, quota=1000000, per_member_limit=100, title="读时抢券 reads+claims")
    tokens = [t for _, t in client.projected_members(st, 48)]
    path = "/api/v1/campaigns/%s" % campaign["id"]
    claims = {}

    def claim(h, i):
        h.token = tokens[i % len(tokens)]
        return h.post(path + "/claims")

    def load():
        claimer = eventlet.spawn(lambda: claims.update(common.http_load(claim, st.url, concurrency=CLAIMERS,
                                                                        duration=seconds)))
        reads = common.http_load(lambda h, i: h.get(path), st.url, concurrency=conc, duration=seconds)
        claimer.wait()
        return reads
    common.say("gateway_read: GET %s at %d connections while %d claim, %ss ..." % (path, conc, CLAIMERS, seconds))
    out = common.measured_load(st, load)
    out["path"] = path
    out["claims"] = {k: claims.get(k) for k in ("ok_per_s", "status", "p50_ms", "p99_ms")}
    out["note"] = "cpu_ms_per_request: the reads' and the claims' CPU over the reads"
    return out


def _gateway_cache_queue(st):
    """``(name, messages delivered)`` of the gateway process's event queue (the management API's figures)."""
    vhost = urllib.parse.quote(broker.vhost_of(st.amqp_uri), safe="")
    for q in common.mgmt("GET", "queues/%s" % vhost).json():
        if q["name"].startswith("unionhub.gateway-cache."):
            stats = q.get("message_stats") or {}
            return q["name"], stats.get("deliver_no_ack", 0) + stats.get("deliver", 0)
    return None, 0


def event_cost(st, campaign_id, n):
    """The gateway process's CPU per ``coupon_claimed`` it hears (``n`` published at once on benefits.events)."""
    name, delivered = _gateway_cache_queue(st)
    if name is None:
        common.say("gateway_read: the gateway has no cache event queue; event cost skipped")
        return {}
    env = events.build("benefits", "coupon_claimed", {
        "coupon_id": "cpn_bench", "campaign_id": campaign_id, "user_id": "usr_bench", "title": "bench",
        "face_value_cents": 1000, "expires_at": "2027-01-01T00:00:00.000Z"}, subject="cpn_bench")
    common.say("gateway_read: %d coupon_claimed events to the gateway's cache subscription ..." % n)

    def load():
        started = time.perf_counter()
        with Connection(st.amqp_uri) as conn:
            producer = conn.Producer(serializer="json")
            for _ in range(n):
                producer.publish(env, exchange=topology.event_exchange("benefits"), routing_key="coupon_claimed")
        deadline = time.time() + 120
        while _gateway_cache_queue(st)[1] < delivered + n and time.time() < deadline:
            time.sleep(0.5)  # the management figures lag a few seconds
        got = _gateway_cache_queue(st)[1] - delivered
        for sub in topology.SUBSCRIPTIONS:  # notify hears them too (inbox, webhooks): not into the next benchmark
            if ("benefits", "coupon_claimed") in topology.expand(sub.bindings):
                queue = topology.queue_name(sub)
                wait_for(lambda q=queue: common.queue_depth(st, q) == 0, 300, 0.5, what="%s drained" % queue)
        return {"requests": n, "ok": min(n, got), "elapsed_s": round(time.perf_counter() - started, 3)}
    out = common.measured_load(st, load)
    out["gateway_cpu_ms_per_event"] = out["cpu_ms_per_request"].get("gateway")
    common.say("gateway_read: %s ms of gateway CPU per event" % out["gateway_cpu_ms_per_event"])
    return out


def figures(res):
    rows = []
    for name, label in (("unions", "GET /unions?level=prefecture"), ("campaigns", "GET /campaigns"),
                        ("campaign", "GET /campaigns/{id}")):
        if name in res:
            rows.append(("%s, 32 conn." % label, res[name]["ok_per_s"], "req/s"))
            rows.append(("%s, p50/p95/p99" % label, "%s / %s / %s" % (
                res[name]["p50_ms"], res[name]["p95_ms"], res[name]["p99_ms"]), "ms"))
    mixed = res.get("campaign_during_claims")
    if mixed:
        rows.append(("GET /campaigns/{id} while %d conn. claim, 32 conn." % CLAIMERS, mixed["ok_per_s"], "req/s"))
        rows.append(("  the claims alongside, %d conn." % CLAIMERS, mixed["claims"]["ok_per_s"], "req/s"))
    return rows


if __name__ == "__main__":
    r = run()
    print(common.table(figures(r), ["figure", "value", "unit"]))

"""The gateway's read path at 32 concurrent keep-alive connections: HTTP -> route table -> RPC -> service -> store.

* ``GET /api/v1/unions?level=prefecture``  (membership: 21 prefecture unions, first page of 20)
* ``GET /api/v1/campaigns``                 (benefits: live campaigns with ``remaining``; 10 are created first)
* ``GET /api/v1/campaigns/{id}``            (benefits: one campaign)

    python -m bench.gateway_read     # its own stack

Sizes: ``BENCH_DURATION`` (seconds per route, default 10), ``BENCH_CONCURRENCY`` (default 32).
"""
from bench import common  # noqa: I001  (monkey-patches first)

import requests  # noqa: E402

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
    finally:
        if own:
            st.stop()
    common.write_result("gateway_read", res)
    return res


def figures(res):
    rows = []
    for name, label in (("unions", "GET /unions?level=prefecture"), ("campaigns", "GET /campaigns"),
                        ("campaign", "GET /campaigns/{id}")):
        if name in res:
            rows.append(("%s, 32 conn." % label, res[name]["ok_per_s"], "req/s"))
            rows.append(("%s, p50/p95/p99" % label, "%s / %s / %s" % (
                res[name]["p50_ms"], res[name]["p95_ms"], res[name]["p99_ms"]), "ms"))
    return rows


if __name__ == "__main__":
    r = run()
    print(common.table(figures(r), ["figure", "value", "unit"]))

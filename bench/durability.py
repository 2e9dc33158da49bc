"""What durability costs: joins/s and claims/s with journaled writes (the default: ``w: "majority", j: true`` and a
store that syncs every commit) against the same stack acknowledging before the journal
(``UNIONHUB_UNDURABLE_FOR_BENCH=1``, which exists only for this measurement).

For each mode, on a fresh stack: ``BENCH_DURABILITY_MEMBERS`` members (default 120) log in by OTP first (not
measured), then join an auto-approving union at ``BENCH_CONCURRENCY`` (default 8) and then each claims one coupon of
one campaign (quota = members). Results: ``bench/results/durability.json`` (with the load average beside them).

    .venv/bin/python -m bench.durability
"""
import os
import time

from bench import common


def measure(durable, members, concurrency):
    if durable:
        os.environ.pop("UNIONHUB_UNDURABLE_FOR_BENCH", None)
    else:
        os.environ["UNIONHUB_UNDURABLE_FOR_BENCH"] = "1"
    try:
        with common.stack() as st:
            from support import client
            admin = common.admin_token(st)
            union = client.create_union(st, admin, auto_approve=True)
            pool = common.eventlet.GreenPool(8)
            tokens = list(pool.imap(lambda _: client.member_token(st), range(members)))
            load_before = os.getloadavg()[0]

            def join(h, i):
                body = {"name": "王五", "id_number": client.new_id_number(), "union_id": union["id"],
                        "employer": "川运物流", "occupation_group": "courier", "consent": True}
                return h.post("/api/v1/members", body, headers=client.auth(tokens[i]))
            joins = common.http_load(join, st.url, concurrency=concurrency, total=members)
            campaign = common.create_campaign(st, admin, quota=members)
            # benefits learns of the members by their member_joined events: wait until it has them all
            deadline = time.time() + 120
            while st.db("benefits").members.count_documents({}) < joins["ok"] and time.time() < deadline:
                time.sleep(0.5)
            path = "/api/v1/campaigns/%s/claims" % campaign["id"]
            claims = common.http_load(lambda h, i: h.post(path, {}, headers=client.auth(tokens[i])), st.url,
                                      concurrency=concurrency, total=members)
            return {"joins": joins, "claims": claims, "load_average_1m": [round(load_before, 2),
                                                                          round(os.getloadavg()[0], 2)]}
    finally:
        os.environ.pop("UNIONHUB_UNDURABLE_FOR_BENCH", None)


def main():
    os.environ.setdefault("UNIONHUB_ENV", "development")  # as make run and make bench run it
    members = common.env_int("BENCH_DURABILITY_MEMBERS", 120)
    concurrency = common.concurrency(8)
    out = {"members": members, "concurrency": concurrency}
    for mode, durable in (("journaled", True), ("not_journaled", False)):
        common.say("durability bench: %s ..." % mode)
        out[mode] = measure(durable, members, concurrency)
        common.say("  %s: joins %s/s, claims %s/s" % (mode, out[mode]["joins"]["ok_per_s"],
                                                      out[mode]["claims"]["ok_per_s"]))
    for what in ("joins", "claims"):
        j, n = out["journaled"][what]["ok_per_s"], out["not_journaled"][what]["ok_per_s"]
        out["%s_per_s_journaled_over_not" % what] = round(j / n, 2) if j and n else None
    path = common.write_result("durability", out)
    rows = [(mode, out[mode]["joins"]["ok_per_s"], out[mode]["joins"]["p50_ms"], out[mode]["claims"]["ok_per_s"],
             out[mode]["claims"]["p50_ms"], out[mode]["load_average_1m"])
            for mode in ("journaled", "not_journaled")]
    print(common.table(rows, ["mode", "joins/s", "join p50 ms", "claims/s", "claim p50 ms", "load avg (before, after)"]))
    print("journaled / not: joins %s, claims %s  -> %s" % (out["joins_per_s_journaled_over_not"],
                                                            out["claims_per_s_journaled_over_not"], path))


if __name__ == "__main__":
    main()

"""Announcements at the province's size: 100,000 projected members, one announcement to all of them.

Announcements fan out on read (``services/notify/fanout.py``): the notice is written once and every audience member's
inbox finds it by the member's keys; the worker then only counts the audience and sends pushes in provider batches.
So the figures are:

* starts the notify service as its own ``nameko run`` process (like ``make run``) on a fresh broker vhost and a
  fresh SecantusDB, and projects ``BENCH_FANOUT_MEMBERS`` members (default 100,000) into notify's ``members``
  collection, in the shape its membership-event handlers write, over the 183 Sichuan counties and the groups;
* sends one announcement to the whole province (RPC ``create_announcement``, as the gateway does) and measures the
  time until it is in a sampled member's inbox (``list_notifications``, as ``GET /members/me/notifications``) and
  the duration of the inbox reads of 20 sampled members that show it,
  and the time until the worker has counted the whole audience (``status: done``, ``recipients`` = members);
* in the same run, the raw store figures: one ``find_one`` by ``_id`` (the floor of any inbox read) and a plain
  cursor over the projection's ids (docs/s, the floor of counting the audience), and the ratios.

    python -m bench.fanout            # writes bench/results/fanout.json

``BENCH_FANOUT_BATCH`` sets notify's ``NOTIFY_FANOUT_BATCH`` (default 1000).
"""
from bench import common  # noqa: I001  (monkey-patches first)

import random  # noqa: E402
import time  # noqa: E402

from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from unionhub_kit import clock, regions  # noqa: E402
from unionhub_kit.schema import OCCUPATION_GROUPS  # noqa: E402

ADMIN = {"sub": "acc_bench_admin", "role": "union_admin", "scope": "51", "merchant_id": None, "employer_id": None}


def project_members(db, n, batch):
    """``n`` active members in the projection (what ``on_member_joined`` writes, minus the phone)."""
    counties = [c["code"] for c in regions.counties()]
    now = clock.now()
    started = time.perf_counter()
    for start in range(0, n, batch):
        docs = []
        for i in range(start, min(n, start + batch)):
            county = counties[i % len(counties)]
            docs.append({"_id": "usr_%09d" % i, "member_id": "mem_%09d" % i, "union_id": "uni_%s0001" % county,
                         "union_code": county + "0001", "region_code": county,
                         "occupation_group": OCCUPATION_GROUPS[i % len(OCCUPATION_GROUPS)], "status": "active",
                         "as_of": now})
        db.members.insert_many(docs, ordered=False)
    return time.perf_counter() - started


def raw_reads(db, samples):
    """The raw store's figures on the same collection: p50 of ``find_one`` by ``_id`` (s) and a plain cursor over
    every id (docs/s)."""
    times = []
    for user in samples:
        t = time.perf_counter()
        db.members.find_one({"_id": user})
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    scanned = sum(1 for _ in db.members.find({}, {"_id": 1}, batch_size=1000))
    return common.percentile(sorted(times), 50), scanned / (time.perf_counter() - t)


def main():
    n = common.env_int("BENCH_FANOUT_MEMBERS", 100000)
    batch = common.env_int("BENCH_FANOUT_BATCH", 1000)
    extra = {"NOTIFY_FANOUT_BATCH": str(batch)}
    samples = ["usr_%09d" % i for i in random.sample(range(n), min(n, 20))]
    with common.stack(services=["notify"], extra_env=extra) as st:
        db = st.db("notify")
        common.say("projecting %d members ..." % n)
        projected_in = project_members(db, n, batch)
        common.say("projected in %.1fs; sending the announcement ..." % projected_in)
        body = {"title": "全省职工公告", "body": "基准测试：发给全省会员的一条公告。",
                "audience": {"region_codes": ["51"]}}
        with ClusterRpcProxy(st.nameko_config(), timeout=30) as cluster:
            wait_until_up(cluster)
            started = time.perf_counter()
            aid = cluster.notify.create_announcement(ADMIN, body)["id"]
            created = time.perf_counter() - started
            visible, reads = [], []  # per sampled member: seconds from the request until its inbox shows it, and
            for user in samples:    # the duration of the inbox read that first showed it
                while True:
                    t = time.perf_counter()
                    items = cluster.notify.list_notifications(member_actor(user), {"limit": 5})["items"]
                    if any(i["id"] == aid for i in items):
                        reads.append(time.perf_counter() - t)
                        visible.append(time.perf_counter() - started)
                        break
                    if time.perf_counter() - started > 120:
                        raise SystemExit("announcement %s not in %s's inbox after 120 s" % (aid, user))
                    time.sleep(0.01)
            while True:
                progress = cluster.notify.get_announcement(ADMIN, aid)
                if progress["status"] == "done":
                    break
                time.sleep(0.2)
            counted = time.perf_counter() - started
        assert progress["recipients"] == n, progress
        assert db.notifications.count_documents({"announcement_id": aid}) == 0  # nothing written per member
        common.say("audience counted in %.1fs; raw store baseline ..." % counted)
        raw_read, raw_scan = raw_reads(db, samples)
    count_rate = n / counted
    result = {
        "members": n, "batch": batch, "projection_seconds": round(projected_in, 2),
        "announcement": {"create_seconds": round(created, 3),
                         "visible_in_first_sampled_inbox_seconds": round(visible[0], 3),
                         "sampled_members": len(samples),
                         "inbox_read_with_it_ms": {"p50": round(common.percentile(sorted(reads), 50) * 1000, 2),
                                                   "max": round(max(reads) * 1000, 2)},
                         "audience_counted_seconds": round(counted, 2), "members_counted_per_s": round(count_rate, 1),
                         "recipients": progress["recipients"], "delivered": progress["delivered"]},
        "raw_store": {"find_one_p50_ms": round(raw_read * 1000, 3), "cursor_ids_per_s": round(raw_scan, 1)},
        "ratio_counting_to_raw_cursor": round(count_rate / raw_scan, 3),
    }
    path = common.write_result("fanout", result)
    print(common.table([
        ["members", n, ""],
        ["announcement written", "%.3f" % created, "s"],
        ["in the first sampled member's inbox after", "%.3f" % visible[0], "s"],
        ["inbox read showing it, p50 of %d members" % len(samples), "%.2f" % (common.percentile(sorted(reads), 50)
                                                                           * 1000), "ms"],
        ["audience counted (recipients = members)", "%.1f" % counted, "s"],
        ["members counted/s", "%.0f" % count_rate, "members/s"],
        ["raw store find_one p50", "%.2f" % (raw_read * 1000), "ms"],
        ["raw store cursor over ids", "%.0f" % raw_scan, "docs/s"],
        ["counting / raw cursor", "%.2f" % (count_rate / raw_scan), ""],
    ], ["announcement fan-out on read", "value", "unit"]))
    print("written to %s" % path)


def member_actor(user):
    return {"sub": user, "role": "member", "scope": None, "merchant_id": None, "employer_id": None}


def wait_until_up(cluster, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            return cluster.notify.ping()
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


if __name__ == "__main__":
    main()

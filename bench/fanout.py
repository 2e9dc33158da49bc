"""Announcement fan-out: 100,000 projected members, one announcement to all of them.

* starts the notify service as its own ``nameko run`` process (like ``make run``) on a fresh broker vhost and a
  fresh SecantusDB;
* projects ``BENCH_FANOUT_MEMBERS`` members (default 100,000) into notify's ``members`` collection, in the shape its
  membership-event handlers write, spread over the 183 Sichuan counties and the occupation groups;
* sends one announcement to the whole province (RPC ``create_announcement``, as the gateway does) and waits until
  its status is ``done``; prints the time to deliver every inbox entry and deliveries/s;
* in the same run, the raw store figure: ``insert_many`` of the same number of inbox-shaped documents, in batches of
  the same size, into a collection with the same indexes, from one client (docs/s), and the ratio.

    python -m bench.fanout            # writes bench/results/fanout.json

``BENCH_FANOUT_BATCH`` sets notify's ``NOTIFY_FANOUT_BATCH`` (default 1000).
"""
from bench import common  # noqa: I001  (monkey-patches first)

import time  # noqa: E402
import uuid  # noqa: E402

from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from services.notify import domain, store  # noqa: E402
from unionhub_kit import clock, regions  # noqa: E402
from unionhub_kit.schema import OCCUPATION_GROUPS  # noqa: E402

ADMIN = {"sub": "acc_bench_admin", "role": "union_admin", "scope": "51", "merchant_id": None, "employer_id": None}


def project_members(db, n, batch):
    """``n`` active members in the projection (what ``on_member_joined`` writes, minus the phone)."""
    counties = [c["code"] for c in regions.counties()]
    now = clock.CLOCK.now()
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


def raw_insert_many(db, n, batch):
    """docs/s of plain ``insert_many`` of inbox-shaped documents with the inbox's indexes."""
    coll = db["raw_inbox_%s" % uuid.uuid4().hex[:6]]
    store.ensure_indexes(db)  # the inbox's indexes (already there: the service made them), copied onto the scratch
    for name, spec in db.notifications.index_information().items():
        if name != "_id_":
            coll.create_index(spec["key"], unique=spec.get("unique", False))
    now = clock.CLOCK.now()
    docs = [{"_id": domain.new_id(now), "user_id": "usr_%09d" % i, "category": "announcements",
             "template": "announcement", "title": "raw", "body": "raw insert_many baseline", "read": False,
             "created_at": now, "dedupe": "raw:%d" % i, "announcement_id": "raw"} for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, batch):
        coll.insert_many(docs[start:start + batch], ordered=False)
    elapsed = time.perf_counter() - started
    coll.drop()
    return n / elapsed, elapsed


def main():
    n = common.env_int("BENCH_FANOUT_MEMBERS", 100000)
    batch = common.env_int("BENCH_FANOUT_BATCH", 1000)
    extra = {"NOTIFY_FANOUT_BATCH": str(batch)}
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
            first_progress = None
            while True:
                progress = cluster.notify.get_announcement(ADMIN, aid)
                if first_progress is None and progress["delivered"] > 0:
                    first_progress = time.perf_counter() - started
                if progress["status"] == "done":
                    break
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
        entries = db.notifications.count_documents({"announcement_id": aid})
        assert entries == progress["delivered"] == n, (entries, progress)
        common.say("fan-out done in %.1fs; raw insert_many baseline ..." % elapsed)
        raw_rate, raw_elapsed = raw_insert_many(db, n, batch)
    rate = n / elapsed
    result = {
        "members": n, "batch": batch, "projection_seconds": round(projected_in, 2),
        "fanout": {"deliver_all_seconds": round(elapsed, 2), "deliveries_per_s": round(rate, 1),
                   "first_batch_seconds": round(first_progress or 0, 2), "delivered": progress["delivered"],
                   "recipients": progress["recipients"]},
        "raw_store": {"insert_many_docs_per_s": round(raw_rate, 1), "seconds": round(raw_elapsed, 2)},
        "ratio_fanout_to_raw_insert_many": round(rate / raw_rate, 3),
    }
    path = common.write_result("fanout", result)
    print(common.table([
        ["members", n, ""],
        ["time to deliver all inbox entries", "%.1f" % elapsed, "s"],
        ["deliveries/s", "%.0f" % rate, "entries/s"],
        ["raw store insert_many", "%.0f" % raw_rate, "docs/s"],
        ["fan-out / raw insert_many", "%.2f" % (rate / raw_rate), ""],
    ], ["announcement fan-out", "value", "unit"]))
    print("written to %s" % path)


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

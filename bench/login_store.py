"""Login's store operations as accounts accumulate: the cause of the login slowdown, and its fix, in figures.

For each size in ``BENCH_LOGIN_ACCOUNTS`` (default ``1000,20000,100000``) it fills a fresh store's ``users`` and
``otps`` to that many phones and times, one at a time, the three store calls of a login (``claim_otp`` for
``POST /auth/otp``; ``spend_try`` then ``user_for_phone`` for ``POST /auth/token``) beside a raw ``find_one`` by
``_id`` in the same run. Before the fix, ``users.phone_hash`` (a partial index the store's planner never used) and
every ``findAndModify`` (written by the store under ``{_id, $and: [query]}``) scanned the collection: at 100,000
accounts ``spend_try`` took 3.7 s and ``user_for_phone`` 3.2 s; with ``update_returning`` and a sparse index they
stay at a few store round trips whatever the size.

    python -m bench.login_store            # writes bench/results/login_store.json
"""
from bench import common  # noqa: I001  (monkey-patches first)

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import timedelta  # noqa: E402

import pymongo  # noqa: E402

from services.membership import store  # noqa: E402
from unionhub_kit import clock  # noqa: E402

SAMPLES = 40


def timed(fn, keys):
    samples = []
    for k in keys:
        started = time.perf_counter()
        fn(k)
        samples.append(time.perf_counter() - started)
    return common.percentiles(samples)


def main():
    sizes = [int(x) for x in os.environ.get("BENCH_LOGIN_ACCOUNTS", "1000,20000,100000").split(",")]
    tmp = tempfile.mkdtemp(prefix="bench-login-")
    uri, proc = common.start_store(os.path.join(tmp, "store"), tmp)
    rows, out = [], {}
    try:
        db = pymongo.MongoClient(uri, tz_aware=True).membership
        store.ensure_indexes(db)
        have = 0
        for n in sizes:
            common.say("login_store: %d accounts ..." % n)
            old = clock.now() - timedelta(hours=2)
            for start in range(have, n, 10000):
                ids = range(start, min(n, start + 10000))
                db.users.insert_many([{"_id": "usr_%09d" % i, "phone_hash": "ph%09d" % i} for i in ids])
                db.otps.insert_many([{"_id": "ph%09d" % i, "sent": [store.NEVER] * 4 + [old], "last_sent": old}
                                     for i in ids])
            have = n
            keys = ["ph%09d" % (n - 1 - i * 7) for i in range(SAMPLES)]
            figures = {
                "raw_find_one_by_id": timed(lambda k: db.users.find_one({"_id": "usr_" + k[2:]}), keys),
                "claim_otp": timed(lambda k: store.claim_otp(db, k, "code", clock.now()), keys),
                "spend_try": timed(lambda k: store.spend_try(db, k, clock.now()), keys),
                "user_for_phone": timed(lambda k: store.user_for_phone(db, k, {"_id": "new_" + k}), keys),
            }
            out[str(n)] = figures
            rows.append([n] + ["%.2f" % figures[k]["p50_ms"] for k in figures])
        first, last = out[str(sizes[0])], out[str(sizes[-1])]
        ratios = {k: round(last[k]["p50_ms"] / max(first[k]["p50_ms"], 1e-6), 2) for k in last}
        common.write_result("login_store", {"accounts": sizes, "ms": out, "p50_ratio_largest_vs_smallest": ratios,
                                            "load_average": os.getloadavg()})
        print(common.table(rows, ["accounts", "raw find_one p50 ms", "claim_otp", "spend_try", "user_for_phone"]))
        print("p50 at %d vs %d accounts: %s" % (sizes[-1], sizes[0], ratios))
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

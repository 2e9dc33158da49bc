"""Recompute the search keys of every open posting: ``python -m services.jobs.rekey`` (``make rekey-jobs``).

Run it once after an upgrade that changes what ``search.search_keys`` produces: postings written before carry the
old keys and would be missing from searches that use the new ones. It also resets the planner's counts, which are
estimates kept after each commit and may drift after crashes. Each open posting gets its keys again (an update
guarded by ``status: open``, so a posting closed meanwhile stays closed), and ``search_stats`` is rebuilt from the
keys at the end. Safe to run while the service runs and safe to run twice; postings opened or closed during the run
only make the counts slightly off until the next run.
"""
import argparse
import collections
import sys
import time

import pymongo
import pymongo.errors
from pymongo import UpdateOne

from unionhub_kit import config

from . import search


def rekey(db, batch=1000, say=print):
    """Give every open posting its current search keys and rebuild ``search_stats``; returns counts."""
    counts = collections.Counter()
    since = latest = None
    changed = seen = 0
    ops = []
    started = time.time()
    fields = {"title": 1, "description": 1, "category": 1, "region_code": 1, "salary_min": 1, "search_keys": 1,
              "order_key": 1}
    for doc in db.jobs.find({"search_keys": "*"}, fields):  # "*": every open posting, through the search index
        seen += 1
        keys = search.search_keys(doc)
        counts.update(keys)
        ms = search.order_key_ms(doc["order_key"])
        since = ms if since is None else min(since, ms)
        latest = ms if latest is None else max(latest, ms)
        if keys != doc.get("search_keys"):
            ops.append(UpdateOne({"_id": doc["_id"], "status": "open"}, {"$set": {"search_keys": keys}}))
        if len(ops) >= batch:
            changed += db.jobs.bulk_write(ops, ordered=False).modified_count
            ops = []
            say("  rekeyed %d of %d open postings seen (%.0f/s)" % (changed, seen, seen / (time.time() - started)))
    if ops:
        changed += db.jobs.bulk_write(ops, ordered=False).modified_count
    stats = [UpdateOne({"_id": k}, {"$set": {"n": n}}, upsert=True) for k, n in counts.items() if k != "*"]
    star = {"n": counts["*"]}
    if since is not None:
        star.update(since=since, latest=latest)
    stats.append(UpdateOne({"_id": "*"}, {"$set": star}, upsert=True))
    for k in range(0, len(stats), 5000):
        db.search_stats.bulk_write(stats[k:k + 5000], ordered=False)
    # keys no open posting has any more
    gone = db.search_stats.delete_many({"_id": {"$nin": list(counts)}}).deleted_count
    return {"open_postings": seen, "rekeyed": changed, "search_keys": len(counts), "stale_keys_removed": gone}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args(argv)
    client = pymongo.MongoClient(config.get("MONGO_URI"), tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError:
        print("no store answers at %s: start one (make run) or set MONGO_URI" % config.get("MONGO_URI"))
        return 2
    db = client[config.db_name("jobs")]
    started = time.time()
    out = rekey(db, args.batch)
    print("done in %.0fs: %s" % (time.time() - started, out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

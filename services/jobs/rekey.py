"""Recompute the search keys of every open posting: ``python -m services.jobs.rekey`` (``make rekey-jobs``).

Run it once after an upgrade that changes what ``search.search_keys`` produces: postings written before carry the
old keys and would be missing from searches that use the new ones. It also resets the planner's counts, which are
estimates kept after each commit and may drift after crashes. Each open posting gets its keys again (an update
guarded by ``status: open``, so a posting closed meanwhile stays closed), and ``search_stats`` is rebuilt from the
keys at the end. Safe to run while the service runs and safe to run twice; postings opened or closed during the run
only make the counts slightly off until the next run.
"""
import argparse
import sys
import time

from pymongo import UpdateOne

from . import search, store


def rekey(db, batch=1000, say=print):
    """Give every open posting its current search keys and rebuild ``search_stats``; returns counts."""
    tally = store.StatsTally()
    changed = seen = 0
    ops = []
    started = time.time()
    fields = {"title": 1, "description": 1, "category": 1, "region_code": 1, "salary_min": 1, "search_keys": 1,
              "order_key": 1}
    for doc in db.jobs.find({"search_keys": "*"}, fields):  # "*": every open posting, through the search index
        seen += 1
        keys = search.search_keys(doc)
        tally.add(keys, doc["order_key"])
        if keys != doc.get("search_keys"):
            ops.append(UpdateOne({"_id": doc["_id"], "status": "open"}, {"$set": {"search_keys": keys}}))
        if len(ops) >= batch:
            changed += db.jobs.bulk_write(ops, ordered=False).modified_count
            ops = []
            say("  rekeyed %d of %d open postings seen (%.0f/s)" % (changed, seen, seen / (time.time() - started)))
    if ops:
        changed += db.jobs.bulk_write(ops, ordered=False).modified_count
    return {"open_postings": seen, "rekeyed": changed, "search_keys": tally.write(db, replace=True)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args(argv)
    db = store.open_from_env()
    if db is None:
        return 2
    started = time.time()
    out = rekey(db, args.batch)
    print("done in %.0fs: %s" % (time.time() - started, out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

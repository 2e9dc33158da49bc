"""Member lists page through bounded windows of ``created_at`` guided by the monthly counters: every member of the
scope once, in (created_at, id) order, whatever the page size, status filter or month gaps."""
import random
from datetime import datetime, timedelta, timezone

from services.membership import domain, store


def test_pages_walk_every_member_of_the_scope_once_in_order(db_of):
    db = db_of("membership")
    store.ensure_indexes(db)
    rng = random.Random(5)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    counties = ["510104", "510105", "510703", "510100"]
    docs = []
    for i in range(700):
        region = counties[i % 4]
        gap = 0 if i % 50 else 70  # some empty months
        start += timedelta(hours=rng.randint(0, 30) + gap * 24)
        docs.append({"_id": "mbr_%06d" % rng.randrange(10 ** 6) + "%03d" % i, "user_id": "usr_%d" % i,
                     "union_id": "un_%s0001" % region, "union_code": region + "0001", "region_code": region,
                     "prefecture_code": region[:4] + "00", "occupation_group": "courier",
                     "status": rng.choice(["active", "active", "pending", "left"]),
                     "created_at": start.replace(microsecond=0) if i % 7 else docs[-1]["created_at"] if docs
                     else start})
    db.members.insert_many(docs)
    store.rebuild_member_counts(db)
    for prefix, status, limit in [("51", None, 50), ("51", "pending", 7), ("5101", None, 13), ("510104", "active", 20),
                                  ("5107", None, 100), ("5101040001", None, 9)]:
        want = sorted((d for d in docs if d["union_code"].startswith(prefix) and status in (None, d["status"])),
                      key=lambda d: (d["created_at"], d["_id"]))
        got, after = [], None
        while True:
            rows = store.list_members(db, prefix, None, status, after, limit)
            got += rows[:limit]
            if len(rows) <= limit:
                break
            after = (rows[limit - 1]["created_at"], rows[limit - 1]["_id"])
        assert [d["_id"] for d in got] == [d["_id"] for d in want], (prefix, status, limit)
    assert domain.member_cursor(domain.encode_cursor("2024-01-01T00:00:00.000Z|mbr_1")) == (
        datetime(2024, 1, 1, tzinfo=timezone.utc), "mbr_1")

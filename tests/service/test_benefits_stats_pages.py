"""Admin campaign pages (GET /admin/stats/benefits) read created_at windows sized from the campaigns per scope and
month: every campaign of the scope once, newest first, across the windows; each window holds about a page whatever
the number of campaigns; the counters are built once from a store's campaigns and kept by each new one; a cursor
that names no campaign is a 400."""
import struct
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from services.benefits import store
from unionhub_kit.errors import ValidationFailed


def test_pages_walk_every_campaign_of_the_scope_once_newest_first(db_of):
    db = db_of("benefits")
    store.ensure_indexes(db)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    docs = []
    for n in range(60):
        at = now - timedelta(days=n * 13 + (n % 3))  # two years and more, some windows empty
        path = ["51", "5101"] if n % 4 else ["51"]
        docs.append({"_id": "cmp_%s" % ObjectId(struct.pack(">IQ", int(at.timestamp()), n)), "area_path": path,
                     "created_at": at, "claim_starts_at": at, "claim_ends_at": at + timedelta(days=7)})
    db.campaigns.insert_many(docs)
    store.build_campaign_months(db, rebuild=True)  # loaded in bulk (as make seed-scale does): counted again
    for scope, status, limit in (("51", None, 7), ("5101", "ended", 10), ("51", "live", 5)):
        want = sorted((d["_id"] for d in docs if scope in d["area_path"] and (
            status is None or (status == "ended") == (d["claim_ends_at"] <= now))), reverse=True)
        got, cursor = [], None
        while True:
            rows = store.scoped_campaigns_page(db, scope, status, cursor, limit, now)
            got += [r["_id"] for r in rows[:limit]]
            if len(rows) <= limit:
                break
            cursor = rows[limit - 1]["_id"]
        assert got == want, (scope, status)
    with pytest.raises(ValidationFailed):
        store.scoped_campaigns_page(db, "51", None, "cmp_nothex", 5, now)


def _campaign(n, at, path):
    return {"_id": "cmp_%s" % ObjectId(struct.pack(">IQ", int(at.timestamp()), n)), "area_path": path,
            "created_at": at, "claim_starts_at": at, "claim_ends_at": at + timedelta(days=7)}


def test_counters_are_built_from_older_campaigns_once_and_kept_by_new_ones(db_of):
    db = db_of("benefits")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    db.campaigns.insert_many([_campaign(n, now - timedelta(days=40 * n), ["51", "5101"]) for n in range(5)])
    store.ensure_indexes(db)  # a store whose campaigns predate the counters
    months = {d["_id"]: d["n"] for d in db.campaign_months.find({"scope": {"$exists": True}})}
    assert sum(n for k, n in months.items() if k.startswith("51|")) == 5
    assert sum(n for k, n in months.items() if k.startswith("5101|")) == 5
    store.ensure_indexes(db)  # a second start does not count them again
    assert sum(d["n"] for d in db.campaign_months.find({"scope": "51"})) == 5
    doc = dict(_campaign(9, now, ["51"]), quota=10)
    with db.client.start_session() as s:
        s.with_transaction(lambda session: store.insert_campaign(db, doc, session))
    assert db.campaign_months.find_one({"_id": "51|%s" % store._month(now)})["n"] >= 1
    assert sum(d["n"] for d in db.campaign_months.find({"scope": "51"})) == 6
    assert [r["_id"] for r in store.scoped_campaigns_page(db, "51", None, None, 1, now)] == sorted(
        [doc["_id"], _campaign(0, now, ["51"])["_id"]], reverse=True)


def test_each_window_holds_about_a_page_however_many_campaigns_a_month_has(db_of):
    """1,200 campaigns in the last year (100 a month, every one older than the first month): the windows a page of
    20 reads hold 21 or so each, not a month's or a year's worth."""
    db = db_of("benefits")
    store.ensure_indexes(db)
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    docs = [_campaign(n, now - timedelta(days=35) - timedelta(seconds=n * 25_000), ["51"]) for n in range(1200)]
    db.campaigns.insert_many(docs)
    store.build_campaign_months(db, rebuild=True)
    times = sorted(d["created_at"] for d in docs)
    windows = list(store.campaign_windows(db, "51", now + timedelta(days=1), 21))
    held = [sum(1 for t in times if lo <= t < hi) for lo, hi in windows]
    assert sum(held) == 1200  # every campaign in exactly one window
    assert max(held) <= 2 * 21
    assert all(hi <= prev_lo for (_, hi), (prev_lo, _) in zip(windows[1:], windows))  # newest first, disjoint


def test_months_with_a_few_campaigns_each_are_read_in_one_window(db_of):
    """As the seed-scale store had them: 4 campaigns this month, 11 the month before, 115 the one before that. The
    first page of 20 is one window query (three before: one per month and a part of the third), and the windows
    still hold every campaign once, newest first."""
    db = db_of("benefits")
    store.ensure_indexes(db)
    now = datetime(2026, 12, 6, 12, tzinfo=timezone.utc)
    docs = [_campaign(n, now - timedelta(days=n), ["51"]) for n in range(4)]  # December
    docs += [_campaign(10 + n, datetime(2026, 11, 2 + 2 * n, tzinfo=timezone.utc), ["51"]) for n in range(11)]
    docs += [_campaign(100 + n, datetime(2026, 10, 1, tzinfo=timezone.utc) + timedelta(hours=6 * n), ["51"])
             for n in range(115)]
    db.campaigns.insert_many(docs)
    store.build_campaign_months(db, rebuild=True)
    windows = list(store.campaign_windows(db, "51", now + timedelta(days=1), 21))
    times = sorted(d["created_at"] for d in docs)
    held = [sum(1 for t in times if lo <= t < hi) for lo, hi in windows]
    assert sum(held) == len(docs) and held[0] >= 21 and max(held) <= 2 * 21
    assert all(hi <= prev_lo for (_, hi), (prev_lo, _) in zip(windows[1:], windows))
    reads = []
    real_find = db.campaigns.find

    class Campaigns:
        def find(self, *a, **kw):
            reads.append(a)
            return real_find(*a, **kw)

    class Db:
        campaigns, campaign_months = Campaigns(), db.campaign_months
    page = store.scoped_campaigns_page(Db(), "51", None, None, 20, now)
    assert len(reads) == 1
    assert [d["_id"] for d in page] == sorted((d["_id"] for d in docs), reverse=True)[:21]

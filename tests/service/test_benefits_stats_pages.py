"""Admin campaign pages (GET /admin/stats/benefits) read bounded created_at windows: every campaign of the scope
once, newest first, across the windows; a cursor that names no campaign is a 400."""
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

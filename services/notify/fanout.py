"""Announcement fan-out: from the member projection to the inbox, in batches, resumable without duplicates.

One replica at a time holds an announcement's lease. It streams the audience from the projection with one cursor
(the store serves a stream far better than repeated range queries), and for every ``NOTIFY_FANOUT_BATCH`` members
writes their inbox entries (and push messages) with ``insert_many``, then checkpoints its progress and renews the
lease. A run stops when its time is up and the next run of the same worker continues the same cursor.

The entries carry a unique ``dedupe`` key (``ann:<announcement>:<user>``). When a worker dies or fails between a
batch and its checkpoint, whoever takes the announcement over (after the lease expires, or the same worker after an
error) streams the audience again from the start, counting the entries that exist and writing only the missing
ones: nobody gets the announcement twice, nobody is skipped, and ``delivered`` stays exact. Progress (``recipients``,
``delivered``, ``status``) is readable throughout.
"""
import itertools
import logging
import time
from datetime import timedelta

from . import delivery, domain, store

log = logging.getLogger("unionhub.notify.fanout")


class _Stream:
    """A worker's open audience cursor, kept between its runs while they end cleanly."""

    def __init__(self, cursor, scanned=0, resuming=False):
        self.cursor, self.scanned, self.resuming = cursor, scanned, resuming

    def next_batch(self, size):
        return [d["_id"] for d in itertools.islice(self.cursor, size)]


_streams = {}  # (owner, announcement id) -> _Stream where this worker's last run stopped because its time was up


def run(db, settings, budget=None):
    """Work on one announcement for up to ``budget`` seconds. Returns ``(more, pushes)``: whether work is left
    (this announcement or another) and how many push messages were queued."""
    budget = settings.tick_budget if budget is None else budget
    now = domain.CLOCK.now()
    owner = settings.owner
    before = store.claim_announcement(db, now, settings.lease_seconds, owner)
    if before is None:
        return False, 0
    aid = before["_id"]
    query = domain.audience_filter(before["audience"], before["scope"])
    stream = _streams.pop((owner, aid), None)
    if before["status"] == "pending":
        recipients = store.count_audience(db, query)
        if not store.start_announcement(db, aid, owner, recipients, now):
            return True, 0  # counting outlasted the lease and another worker took it over
        log.info("announcement %s: fan-out to %d members started", aid, recipients)
        stream = _Stream(store.audience_stream(db, query, settings.batch))
    elif stream is None or stream.scanned != before.get("scanned") or before.get("lease_owner") != owner:
        # taken over from a worker that stopped (or failed) between a batch and its checkpoint: stream again from
        # the start, counting the entries that exist and writing the missing ones
        if not store.reset_progress(db, aid, owner):
            return True, 0
        log.warning("announcement %s: resuming; writing the missing entries", aid)
        stream = _Stream(store.audience_stream(db, query, settings.batch), resuming=True)
    data = {"title": before["title"], "body": before["body"]}
    deadline = time.monotonic() + budget
    pushes = 0
    while True:
        now = domain.CLOCK.now()
        batch = stream.next_batch(settings.batch)
        todo = store.without_announcement_entry(db, aid, batch) if stream.resuming else batch
        inserted = 0
        if todo:
            inbox, dispatches = delivery.plan(db, None, "announcement", todo, data, "ann:%s" % aid, now,
                                              announcement_id=aid)
            inserted = store.insert_new(db.notifications, inbox)
            pushes += store.insert_new(db.dispatches, dispatches)
            before_checkpoint(aid, todo)
        stream.scanned += len(batch)
        lease_until = now + timedelta(seconds=settings.lease_seconds)
        delivered = inserted + len(batch) - len(todo)  # (when resuming, those who had it already count too)
        if not store.checkpoint_announcement(db, aid, owner, stream.scanned, delivered, lease_until):
            log.warning("announcement %s: lease lost, another worker continues", aid)
            return True, pushes
        if len(batch) < settings.batch:  # the stream is exhausted
            store.finish_announcement(db, aid, owner, domain.CLOCK.now())
            log.info("announcement %s: fan-out finished", aid)
            return True, pushes
        if time.monotonic() > deadline:
            _streams[(owner, aid)] = stream
            return True, pushes


def before_checkpoint(announcement_id, user_ids):
    """Hook between a batch's writes and its checkpoint (tests make a worker fail or die here)."""

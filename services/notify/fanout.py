"""Announcements: written once, read by every member they reach; this worker counts the audience and sends the push
messages in provider batches.

An announcement is in every audience member's inbox from the moment it is written: the inbox merges the member's own
entries with the announcements found by the member's keys (fan-out on read, ``domain.reaches``), and a member's read
state of an announcement is a small record of its own. Nothing is written per member, so a notice to all of Sichuan
costs one insert, not 7.5 million.

What is left per member is the push message, and it goes to the provider as multicasts (``PUSH_MULTICAST_MAX``
device tokens a call, ``PUSH_MULTICAST_PER_SECOND`` calls a second, each retried with backoff like any dispatch).
One replica at a time holds an announcement's lease. It streams the audience from the projection with one cursor in
``_id`` order (``store.audience_stream``), and for every ``NOTIFY_FANOUT_BATCH`` members writes the batch's
multicast dispatches, then checkpoints the members counted (``scanned``, also ``recipients``: the inbox shows it to
all of them), the batches (``batches``) and the last member id counted (``last_id``), and renews the lease. A run
stops when its time is up and the next run of the same worker continues the same cursor. A worker that takes an
announcement over opens a cursor on the audience after the checkpoint's member (``{"_id": {"$gt": last_id}}``
joins the query). Resuming after a count (``skip=scanned`` in natural order, before issue 13) could miss or repeat
members: the store's natural answer changes with the indexes there are (grouped by region once ``region_code``'s
exists), and a member who joined or left among those counted moved all the others; after a member id neither
matters. On MongoDB it also reads only what is left (a ``skip`` walks every member counted, in one call);
SecantusDB 0.7 builds a find's whole answer in its first call either way (``docs/capacity.md``). The batch written
but not checkpointed is read again (the same members, unless one joined or left among them meanwhile) and written
again under the same batch number's ``dedupe`` keys, so no device gets the push twice. An announcement checkpointed
before ``last_id`` existed (``scanned`` without it) finishes as it started, in natural order after ``skip=scanned``.

The fan-out shares its process (inbox reads, login codes, sends) and the store with every request: unpaced, the
inbox read that should show a province-wide notice at once waited behind its audience count (1.42 s at 100,000
members, ``bench.fanout``). After each batch the worker rests so that it works at most ``NOTIFY_FANOUT_DUTY`` (0.5)
of the time (``rest``), yielding the process and the store to requests in between.
"""
import itertools
import logging
import time
from datetime import timedelta

import eventlet

from unionhub_kit import clock

from . import delivery, domain, store

log = logging.getLogger("unionhub.notify.fanout")


class _Stream:
    """A worker's open audience cursor, kept between its runs while they end cleanly. ``last_id``: the last member
    counted (None while nothing is, and for a stream continued in natural order from an older checkpoint)."""

    def __init__(self, cursor, scanned=0, batches=0, last_id=None, by_id=True):
        self.cursor, self.scanned, self.batches = cursor, scanned, batches
        self.last_id, self.by_id = last_id, by_id

    def next_batch(self, size):
        batch = [d["_id"] for d in itertools.islice(self.cursor, size)]
        if batch and self.by_id:
            self.last_id = batch[-1]
        return batch


_streams = {}  # (owner, announcement id) -> _Stream where this worker's last run stopped because its time was up


def run(db, settings, budget=None):
    """Work on one announcement for up to ``budget`` seconds. Returns ``(more, pushes)``: whether work is left
    (this announcement or another) and how many multicast messages were queued."""
    budget = settings.tick_budget if budget is None else budget
    now = clock.now()
    owner = settings.owner
    before = store.claim_announcement(db, now, settings.lease_seconds, owner)
    if before is None:
        return False, 0
    aid = before["_id"]
    query = domain.audience_filter(before["audience"], before["scope"])
    stream = _streams.pop((owner, aid), None)
    if before["status"] == "pending":
        if not store.start_announcement(db, aid, owner, now):
            return True, 0
        log.info("announcement %s: counting its audience and sending its pushes", aid)
        stream = _Stream(store.audience_stream(db, query, settings.batch))
    elif stream is None or stream.scanned != before.get("scanned") or before.get("lease_owner") != owner:
        # taken over from a worker that stopped (or failed) between a batch and its checkpoint: continue after the
        # member the checkpoint names; the batch after it is written again under the same dedupe keys
        scanned, batches = before.get("scanned") or 0, before.get("batches") or 0
        if scanned and before.get("last_id") is None:
            # checkpointed by a count in natural order (before the checkpoint named the member): finish that way
            log.warning("announcement %s: resuming after %d members (natural order)", aid, scanned)
            stream = _Stream(store.audience_stream(db, query, settings.batch, skip=scanned), scanned, batches,
                             by_id=False)
        else:
            log.warning("announcement %s: resuming after %d members (after %s)", aid, scanned, before.get("last_id"))
            stream = _Stream(store.audience_stream(db, query, settings.batch, after=before.get("last_id")), scanned,
                             batches, before.get("last_id"))
    data = {"title": before["title"], "body": before["body"]}
    deadline = time.monotonic() + budget
    pushes = 0
    while True:
        worked = time.monotonic()
        now = clock.now()
        batch = stream.next_batch(settings.batch)
        if batch:
            multicasts = delivery.plan_multicast(db, "announcement", batch, data, aid,
                                                 "ann:%s:b%d" % (aid, stream.batches), now,
                                                 settings.push_multicast_max)
            pushes += store.insert_new(db.dispatches, multicasts)
            before_checkpoint(aid, batch)
        stream.scanned += len(batch)
        stream.batches += 1
        lease_until = now + timedelta(seconds=settings.lease_seconds)
        if not store.checkpoint_announcement(db, aid, owner, stream.scanned, stream.batches, lease_until,
                                             stream.last_id):
            log.warning("announcement %s: lease lost, another worker continues", aid)
            return True, pushes
        if len(batch) < settings.batch:  # the stream is exhausted
            store.finish_announcement(db, aid, owner, clock.now())
            log.info("announcement %s: %d members, pushes queued", aid, stream.scanned)
            return True, pushes
        if time.monotonic() > deadline:
            _streams[(owner, aid)] = stream
            return True, pushes
        eventlet.sleep(rest(time.monotonic() - worked, settings.fanout_duty))


def rest(worked, duty):
    """Seconds to rest after ``worked`` seconds of fan-out so that it takes ``duty`` of the time (0 at duty 1)."""
    return max(0.0, worked) * (1.0 - duty) / duty


def before_checkpoint(announcement_id, user_ids):
    """Hook between a batch's writes and its checkpoint (tests make a worker fail or die here)."""

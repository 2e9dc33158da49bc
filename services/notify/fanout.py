"""Announcement fan-out: from the member projection to the inbox, in batches, resumable without duplicates.

One replica at a time holds an announcement's lease. Each batch takes the next ``NOTIFY_FANOUT_BATCH`` members of
the audience in user-id order, writes their inbox entries (and push messages) with ``insert_many``, then records
the last user id as the checkpoint and renews the lease. The entries carry a unique ``dedupe`` key
(``ann:<announcement>:<user>``): when a process dies between a batch and its checkpoint, whoever takes the
announcement over after the lease expires re-counts the entries written so far, repeats that batch, and the
duplicates are refused by the index. Progress (``recipients``, ``delivered``, ``status``) is readable throughout.
"""
import logging
import time
from datetime import timedelta

from . import delivery, domain, store

log = logging.getLogger("unionhub.notify.fanout")

# (owner, announcement id) -> the checkpoint where this worker's last run stopped cleanly (its time was up); a
# run that ended any other way (an error, a dead process) is resumed with a recount
_clean = {}
_NONE = object()


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
    if before["status"] == "pending":
        recipients = store.count_audience(db, query)
        store.start_announcement(db, aid, owner, recipients, now)
        log.info("announcement %s: fan-out to %d members started", aid, recipients)
    elif _clean.pop((owner, aid), _NONE) != before.get("cursor") or before.get("lease_owner") != owner:
        # taken over from a worker that stopped between a batch and its checkpoint: count what it wrote
        written = store.count_announcement_entries(db, aid)
        store.reset_delivered(db, aid, owner, written)
        log.warning("announcement %s: resuming after user %s (%d entries already written)", aid,
                    before.get("cursor"), written)
    data = {"title": before["title"], "body": before["body"]}
    cursor = before.get("cursor")
    deadline = time.monotonic() + budget
    pushes = 0
    while True:
        now = domain.CLOCK.now()
        user_ids = store.audience_page(db, query, cursor, settings.batch)
        if user_ids:
            inbox, dispatches = delivery.plan(db, None, "announcement", user_ids, data, "ann:%s" % aid, now,
                                              announcement_id=aid)
            inserted = store.insert_new(db.notifications, inbox)
            pushes += store.insert_new(db.dispatches, dispatches)
            before_checkpoint(aid, user_ids[-1])
            cursor = user_ids[-1]
            lease_until = now + timedelta(seconds=settings.lease_seconds)
            if not store.checkpoint_announcement(db, aid, owner, cursor, inserted, lease_until):
                log.warning("announcement %s: lease lost, another worker continues", aid)
                return True, pushes
        if len(user_ids) < settings.batch:
            store.finish_announcement(db, aid, owner, domain.CLOCK.now())
            log.info("announcement %s: fan-out finished", aid)
            return True, pushes
        if time.monotonic() > deadline:
            _clean[(owner, aid)] = cursor
            return True, pushes


def before_checkpoint(announcement_id, last_user_id):
    """Hook between a batch's writes and its checkpoint (tests make a process die here)."""

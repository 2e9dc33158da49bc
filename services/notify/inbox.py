"""A member's inbox: their own entries (``notifications``) merged with the announcements that reach them (fan-out on
read: an announcement is stored once and found by the member's keys), newest first, one cursor over both (both ids
are creation-ordered and of one form); read state per member (an entry's ``read``; an ``announcement_reads``
record).

The announcements of the last ``RECENT_DAYS`` are kept in each process's memory by key (``Recent``: 2,470 a year,
~1 MB), so a page reads the member's entries, the member and the read state, and not the announcements: reading
them from the store by each of the member's five keys was most of an inbox page at scale (2.5x the empty store's
p95 in ``bench.scale``). Before each page the process reads what was written since it last looked (one range
read on the ``created_at`` index, usually empty, going back ``RECENT_MARGIN`` for writes that committed late), so a
new announcement is in the next page of any process. Older pages read the store's windows (``store.announcements_for``)."""
import bisect
from datetime import timedelta

from eventlet.semaphore import Semaphore

from unionhub_kit import clock

from . import domain, store

RECENT_DAYS = 400
RECENT_MAX = 20_000  # announcements kept at most (the newest), whatever their age
RECENT_MARGIN = timedelta(seconds=60)  # a transaction commits within seconds of its id's time


class Recent:
    """The newest announcements by key (``memory`` of notify's processes: one per container)."""

    def __init__(self):
        self.docs, self.by_key = {}, {}  # id -> slim doc; key -> ascending ids
        self.floor = None  # the oldest id this holds every announcement from (None: not loaded yet)
        self.looked_at = None  # when the store was last read
        self.older = True  # whether the store has announcements below the floor (pages past it read the store)
        self.lock = Semaphore()  # one look at a time: a page waits for a first load in progress, not half of it

    def refresh(self, db, now=None):
        """Add what was written since the last look (the last ``RECENT_DAYS`` on the first)."""
        with self.lock:
            now = now or clock.now()
            if self.floor is None:
                since = now - timedelta(days=RECENT_DAYS)
                older = store.announcement_before(db, since)
                docs = store.announcements_since(db, since)
                self.floor, self.older = domain.id_at(since), older
            else:
                docs = store.announcements_since(db, self.looked_at - RECENT_MARGIN)
            self.looked_at = now
            for d in docs:
                self._add(d)
            if len(self.docs) > RECENT_MAX:
                self._trim()

    def _add(self, d):
        if d["_id"] in self.docs or d["_id"] < self.floor:
            return
        self.docs[d["_id"]] = d
        for key in d.get("keys") or ():
            bisect.insort(self.by_key.setdefault(key, []), d["_id"])

    def _trim(self):
        keep = sorted(self.docs)[-RECENT_MAX:]
        self.floor, self.older = keep[0], True
        self.docs = {i: self.docs[i] for i in keep}
        self.by_key = {k: [i for i in ids if i >= self.floor] for k, ids in self.by_key.items()}

    def found_by(self, keys, below, since):
        """The announcements found by any of ``keys``, ids in ``[max(since, floor), below)``, newest first."""
        lo = max(since or "", self.floor)
        ids = set()
        for key in keys:
            ids_ = self.by_key.get(key, ())
            ids.update(ids_[bisect.bisect_left(ids_, lo):bisect.bisect_left(ids_, below) if below else len(ids_)])
        return [self.docs[i] for i in sorted(ids, reverse=True)]


def page(db, user_id, unread, after, limit, recent=None, member=False):
    """``{"items", "next_cursor"}``: ``limit`` entries below the cursor ``after`` (an id), filtered by ``unread``
    (True: unread only; False: read only; None: all). ``recent``: the process's ``Recent`` (None: the store only).
    ``member``: the member whose announcements to merge (None: none), by default as the projection knows them."""
    own = store.list_notifications(db, user_id, unread, after, limit)
    if member is False:
        member = store.member(db, user_id)
    announcements = _announcements(db, user_id, member, unread, after, limit + 1, recent) if member else []
    return domain.page(domain.merge_inbox(own, announcements, limit), limit, domain.notification_view)


def _announcements(db, user_id, member, unread, below, wanted, recent=None):
    """Up to ``wanted`` announcements that reach ``member``, newest first, below ``below``, with their read state:
    from ``recent`` down to its floor, then from the store."""
    if member.get("status") != "active":
        return []
    keys = domain.member_keys(member)
    since = domain.id_at(member["active_since"]) if member.get("active_since") else None
    out = []
    if recent is not None:
        recent.refresh(db)
        found = recent.found_by(keys, below, since)
        for k in range(0, len(found), wanted):
            mine = [d for d in found[k:k + wanted] if domain.reaches(d, member)]
            read = store.read_announcements(db, user_id, [d["_id"] for d in mine]) if mine else set()
            out += [domain.announcement_entry(d, d["_id"] in read) for d in mine
                    if unread is None or (d["_id"] in read) != unread]
            if len(out) >= wanted:
                return out[:wanted]
        if not recent.older or (since is not None and since >= recent.floor):
            return out
        below = min(below, recent.floor) if below else recent.floor
    while len(out) < wanted:
        docs = store.announcements_for(db, keys, below, since, wanted)
        mine = [d for d in docs if domain.reaches(d, member)]
        read = store.read_announcements(db, user_id, [d["_id"] for d in mine]) if mine else set()
        out += [domain.announcement_entry(d, d["_id"] in read) for d in mine
                if unread is None or (d["_id"] in read) != unread]
        if len(docs) < wanted:
            break
        below = docs[-1]["_id"]
    return out[:wanted]


def mark_read(db, user_id, entry_id, now):
    """The entry (or announcement) marked read for this member; None when the member has no such entry."""
    doc = store.mark_read(db, user_id, entry_id, now)
    if doc is not None:
        return doc
    ann = store.announcement(db, entry_id)
    if ann is None or not ann.get("keys") or not domain.reaches(ann, store.member(db, user_id)):
        return None
    store.mark_announcement_read(db, user_id, entry_id, now)
    return domain.announcement_entry(ann, True)

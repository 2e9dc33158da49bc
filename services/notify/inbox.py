"""A member's inbox: their own entries (``notifications``) merged with the announcements that reach them (fan-out on
read: an announcement is stored once and found by the member's keys), newest first, one cursor over both (both ids
are creation-ordered and of one form); read state per member (an entry's ``read``; an ``announcement_reads``
record)."""
from . import domain, store

def page(db, user_id, unread, after, limit):
    """``{"items", "next_cursor"}``: ``limit`` entries below the cursor ``after`` (an id), filtered by ``unread``
    (True: unread only; False: read only; None: all)."""
    own = store.list_notifications(db, user_id, unread, after, limit)
    member = store.member(db, user_id)
    announcements = _announcements(db, user_id, member, unread, after, limit + 1) if member else []
    return domain.page(domain.merge_inbox(own, announcements, limit), limit, domain.notification_view)


def _announcements(db, user_id, member, unread, below, wanted):
    """Up to ``wanted`` announcements that reach ``member``, newest first, below ``below``, with their read state."""
    if member.get("status") != "active":
        return []
    keys = domain.member_keys(member)
    since = domain.id_at(member["active_since"]) if member.get("active_since") else None
    out = []
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

"""Member projections: what benefits, notify and jobs keep of membership's events, written one way.

Events of different types travel on different queues and may arrive out of order, so an event older than the one a
projection already applied changes nothing (``as_of``: the event's time). The fields kept are the membership
event's non-personal ones (``member_fields``); a service adds what it needs beyond them (notify: the phone sealed
for sending; jobs: the masked phone employers see).
"""
from . import events
from .mongo import upsert_returning

MEMBER_FIELDS = ("member_id", "union_id", "union_code", "region_code", "occupation_group", "status")


def member_fields(data):
    """The fields of a membership event's data a projection keeps (``catalog.MemberData``, no personal data)."""
    return {k: data[k] for k in MEMBER_FIELDS}


def event_time(envelope):
    """When a membership event happened (what ``as_of`` compares)."""
    return events.parse_time(envelope["time"])


def project_member(coll, user_id, fields, as_of, session, unset=()):
    """Apply what membership said of ``user_id`` at ``as_of`` (an event's time, or when an RPC answer was read;
    ``fields`` to set, ``unset`` to remove) to the projection ``coll`` unless something newer was applied already.
    Returns the member document after it (as it stands when the news was older)."""
    current = coll.find_one({"_id": user_id}, session=session)
    if current is not None and current.get("as_of") and current["as_of"] > as_of:
        return current
    update = {"$set": dict(fields, as_of=as_of)}
    if unset:
        update["$unset"] = {k: "" for k in unset}
    return upsert_returning(coll, {"_id": user_id}, update, session=session)

"""Tokens that end before they expire: the gateway's revocation list.

Access tokens are verified without a call (signature, expiry); what ends them early is a *revocation* that
membership records: a login ended (logout, a spent refresh token presented again: by ``sid``) or every token of an
account so far (erasure, an account disabled: by ``sub``, with ``not_before`` = the second it happened). The check per
request is two dictionary lookups, with no call, because the gateway keeps the revocations of the last access-token
lifetime (15 minutes; older ones concern only expired tokens) in memory:

* a revocation made through this gateway (logout, erasure, disabling) is applied here the moment membership answers;
* every gateway asks membership for the revocations since its last look every ``REVOCATION_POLL_SECONDS`` (1 s), so
  one made through another replica reaches it within that;
* until its first look has succeeded a gateway makes it before authorising anything.

Why a list and not a per-request call or a per-user "token generation" cache: revocations are rare (a logout is one
small record) while authenticated requests are the whole load (the 10:00 grab); a per-request RPC would double the
calls on the hot path and a short-lived cache of per-user state would still cost one call per user per expiry, where
this costs one small call per second per gateway, whatever the traffic.
"""
import datetime
import logging
import threading
import time

from unionhub_kit import events
from unionhub_kit.errors import Unauthorized

log = logging.getLogger("unionhub.gateway.revocations")

KEEP_SECONDS = 20 * 60
OVERLAP_SECONDS = 5  # asked again, for records committed late by another membership replica


class Revocations:
    def __init__(self):
        self.sessions = {}  # sid -> when it was revoked (epoch seconds)
        self.users = {}  # sub -> not_before (epoch seconds): tokens issued at or before it are dead
        self.seen = set()
        self.after = None  # epoch seconds of the newest revocation seen
        self.loaded = False
        self.forgot = time.time()
        self._lock = threading.Lock()

    def apply(self, records):
        now = time.time()
        for r in records or ():
            if not r or r.get("id") in self.seen:
                continue
            self.seen.add(r["id"])
            at = events.parse_time(r["at"]).timestamp()
            self.after = max(self.after or at, at)
            if r["kind"] == "session":
                self.sessions[r["sid"]] = at
            elif r["kind"] == "user":
                self.users[r["sub"]] = max(self.users.get(r["sub"], 0), int(r["not_before"]))
        if now - self.forgot > 60:
            self._forget(now)

    def _forget(self, now):
        """Drop what concerns only expired tokens by now."""
        self.forgot = now
        floor = now - KEEP_SECONDS
        self.sessions = {k: v for k, v in self.sessions.items() if v >= floor}
        self.users = {k: v for k, v in self.users.items() if v >= floor}
        self.seen = set(list(self.seen)[-10000:])

    def sync(self, membership):
        """Fetch the revocations since the last look (one small RPC)."""
        with self._lock:
            since = None if self.after is None else events.rfc3339(
                datetime.datetime.fromtimestamp(self.after - OVERLAP_SECONDS, datetime.timezone.utc))
            self.apply(membership.revocations_since(since))
            self.loaded = True

    def check(self, principal, membership):
        """401 ``TOKEN_REVOKED`` when the token's login or account has been ended."""
        if not self.loaded:
            self.sync(membership)
        if (principal.sid and principal.sid in self.sessions) or \
                (principal.iat is not None and principal.iat <= self.users.get(principal.sub, -1)):
            raise Unauthorized("This token has been revoked; log in again.", code="TOKEN_REVOKED")


REVOCATIONS = Revocations()

"""The membership service: union organisations, members (join, approve, reject, transfer, leave, erase) and identity
(login codes, staff accounts, tokens).

RPC methods take the caller as ``actor`` (``gateway.auth.Principal.as_actor()``) and validate their payload with the
schemas the gateway uses. Every state change that announces an event writes the event to the outbox in the same
transaction. Resident ID numbers are kept only as a keyed hash (uniqueness) and an encrypted copy; they are never
logged, returned or put on an event.
"""
import logging
from datetime import timedelta


from unionhub_kit import clock, config, crypto, events, ids, regions, tokens
from unionhub_kit.config import timer
from unionhub_kit.errors import (AppError, Conflict, NotFound, RateLimited, ServiceUnavailable, Unauthorized,
                                  validation_error)
from unionhub_kit.metrics import ServiceMetrics
from unionhub_kit.mongo import Mongo, transaction
from unionhub_kit.outbox import Outbox
from unionhub_kit.ping import ping as _ping
from unionhub_kit.rpc import Rpc, rpc
from unionhub_kit.schema import load

from . import domain, schemas, seed, store
from .domain import require_role, require_scope

log = logging.getLogger("unionhub.membership")
FOLD_BATCH = 200  # member counter deltas folded in one transaction (well inside the store timeout)


def _in_scope(actor, doc, what, doc_id, code_field):
    """``doc`` (a member or transfer read by id) for a union_admin whose scope holds its ``code_field``; 404 if none."""
    require_role(actor, "union_admin")
    if doc is None:
        raise NotFound("No %s with id %s." % (what, doc_id))
    require_scope(actor, doc[code_field])
    return doc


class MembershipService:
    name = "membership"
    db = Mongo(indexes=seed.prepare)
    outbox = Outbox()
    metrics = ServiceMetrics()  # entrypoint latency/errors, request id in every log line
    notify = Rpc("notify")
    benefits = Rpc("benefits")  # where a merchant account's merchant lies (scope)
    jobs = Rpc("jobs")  # where an employer account's employer lies (scope)

    @rpc
    def ping(self):
        return _ping(self.name, self.db)

    @timer("OTP_PURGE_SECONDS")
    def purge_stale_otps(self):
        """Login-code records of phones sent nothing for an hour go (idempotent; any replica may run it)."""
        try:
            gone = store.purge_stale_otps(self.db, clock.now())
        except Exception:  # the next tick tries again; a timer that raised would be logged and forgotten anyway
            log.exception("purging stale login codes failed")
            return
        if gone:
            log.info("purged %d stale login-code records", gone)

    @timer("COUNT_FOLD_SECONDS")
    def fold_member_counts(self):
        """Add the member counter changes of recent joins, approvals and departures into the counters."""
        try:
            while store.fold_count_deltas(self.db, limit=FOLD_BATCH) == FOLD_BATCH:
                pass
        except Exception:  # the next tick tries again
            log.exception("folding member counters failed")

    # ---- identity -------------------------------------------------------------------------------------------
    @rpc
    def request_otp(self, payload, client=None):
        """Send a login code by SMS (through notify's RPC; the code never travels on an event). ``client`` is the
        caller's address as the gateway sees it: at most ``OTP_PER_ADDRESS_PER_HOUR`` codes an hour from one."""
        phone = load(schemas.OtpRequest, payload)["phone"]
        client = load(schemas.ClientAddress, {"address": client})["address"]
        key, code, now = domain.phone_key(phone), domain.new_otp(), clock.now()
        code_hash = domain.otp_hash(key, code)
        client_key = domain.client_key(client) if client else None
        if client_key:
            wait = store.claim_client_slot(self.db, client_key, now, config.get("OTP_PER_ADDRESS_PER_HOUR"))
            if wait is not None:
                raise domain.too_many_codes_from_here(wait)
        if not store.claim_otp(self.db, key, code_hash, now):
            if client_key:
                store.release_client_slot(self.db, client_key, now)
            raise RateLimited("Too many codes for this phone: at most 1 a minute and %d an hour."
                              % domain.OTP_PER_HOUR, code="RATE_LIMITED")
        try:
            self.notify.send_sms({"to": phone, "template": "otp", "params": {"code": code}})
        except Exception as exc:
            store.release_otp(self.db, key, code_hash, now)
            if client_key:
                store.release_client_slot(self.db, client_key, now)
            if isinstance(exc, AppError):
                raise
            raise ServiceUnavailable("The SMS could not be sent; try again.", code="SMS_UNAVAILABLE")
        return {"expires_in": domain.OTP_TTL_SECONDS}

    @rpc
    def issue_token(self, payload):
        """``{phone, code}`` -> a member token; ``{username, password}`` -> the account's token (five wrong
        passwords in a row lock the username for ``LOGIN_LOCKOUT_SECONDS``: every try meanwhile is a 429)."""
        p = load(schemas.TokenRequest, payload)
        if "phone" in p:
            user = self._check_code(p["phone"], p["code"])
            return self._token(user["_id"], "member")
        now = clock.now()
        locked_until = store.login_locked_until(self.db, p["username"], now)
        if locked_until is not None:
            raise domain.locked_out(domain.seconds_until(locked_until, now))
        account = store.account_by_username(self.db, p["username"])
        if account is not None and account.get("disabled_at"):
            account = None  # a disabled account answers like a wrong password (and costs the same)
        if not domain.verify_password(p["password"], account["password_hash"] if account else None):
            store.login_failed(self.db, p["username"], now, domain.LOCKOUT_AFTER,
                               config.get("LOGIN_LOCKOUT_SECONDS"))
            raise domain.invalid_credentials()
        store.login_succeeded(self.db, p["username"])
        if domain.needs_rehash(account["password_hash"]):  # an old hash: today's parameters from now on
            store.set_password_hash(self.db, account["_id"], account["password_hash"],
                                    domain.hash_password(p["password"]))
        return self._token(account["_id"], account["role"], scope=account.get("scope"),
                           merchant_id=account.get("merchant_id"), employer_id=account.get("employer_id"))

    def _check_code(self, phone, code):
        """Spend one of the code's tries (atomically), then compare; a right code is used up."""
        key = domain.phone_key(phone)
        live = store.spend_try(self.db, key, clock.now())
        if not live or not domain.same_code(live["code_hash"], key, code) or \
                not store.consume_otp(self.db, key, live["code_hash"]):
            raise domain.invalid_code()
        return store.user_for_phone(self.db, key, {
            "_id": domain.new_id("usr"), "phone_enc": crypto.encrypt(phone), "phone_masked": ids.mask_phone(phone),
            "created_at": clock.now()})

    def _token(self, sub, role, **claims):
        """A new login (session): an access token naming it and its first refresh token."""
        now = clock.now()
        sid = domain.new_id("ses")
        refresh = domain.new_refresh_token(sid)
        store.insert_session(self.db, {"_id": sid, "sub": sub, "role": role, "claims": claims,
                                       "refresh_hash": domain.refresh_hash(refresh), "spent": [], "created_at": now,
                                       "expires_at": now + timedelta(seconds=domain.REFRESH_TTL_SECONDS),
                                       "revoked_at": None})
        return self._answer(sid, sub, role, claims, refresh)

    @staticmethod
    def _answer(sid, sub, role, claims, refresh):
        return {"access_token": tokens.issue(sub, role, sid=sid, **claims), "token_type": "Bearer",
                "expires_in": tokens.DEFAULT_TTL, "role": role, "refresh_token": refresh}

    @rpc
    def refresh_token(self, payload):
        """Rotation: the refresh token is spent for a new access token and a new refresh token. A spent one
        presented again ends that whole login (someone else has a copy)."""
        token = load(schemas.RefreshRequest, payload)["refresh_token"]
        sid, now = domain.session_of(token), clock.now()
        ses = store.login_session(self.db, sid) if sid else None
        if ses is None or ses.get("revoked_at") or ses["expires_at"] <= now:
            raise domain.invalid_refresh()
        presented = domain.refresh_hash(token)
        if presented in ses.get("spent", ()):
            store.end_session(self.db, sid, now, "refresh token reused")
            log.warning("a spent refresh token was presented again: login %s ended", sid)
            raise domain.refresh_reused()
        fresh = domain.new_refresh_token(sid)
        if presented != ses["refresh_hash"] or not store.rotate_session(self.db, sid, presented,
                                                                        domain.refresh_hash(fresh), now):
            if presented == ses["refresh_hash"]:  # a concurrent refresh spent it between the read and the write
                store.end_session(self.db, sid, now, "refresh token reused")
                raise domain.refresh_reused()
            raise domain.invalid_refresh()
        return self._answer(sid, ses["sub"], ses["role"], ses.get("claims") or {}, fresh)

    @rpc
    def logout(self, actor):
        """End the caller's login: its access token and its refresh token stop working at once. Returns the
        revocation (the gateway that carried the call applies it at once; the others within a poll)."""
        if not actor or not actor.get("sub"):
            raise Unauthorized("Not signed in.", code="UNAUTHORIZED")
        now = clock.now()
        if actor.get("sid"):
            r = store.end_session(self.db, actor["sid"], now, "logout")
            return domain.revocation_view(r) if r else None
        return domain.revocation_view(store.end_sessions_of(self.db, actor["sub"], now, "logout"))

    @rpc
    def revocations_since(self, after=None):
        """Ended logins and accounts since ``after`` (RFC 3339; None: all that still matter), for the gateways."""
        after = load(schemas.RevocationsQuery, {"after": after})["after"]
        return [domain.revocation_view(r) for r in store.revocations_since(self.db, after, clock.now())]

    @rpc
    def disable_account(self, actor, account_id):
        """A union_admin disables an account in its scope: it cannot log in, and every token of it answers 401."""
        require_role(actor, "union_admin")
        account = store.account_by_id(self.db, account_id) if isinstance(account_id, str) else None
        if account is None:
            raise NotFound("No account with id %s." % account_id)
        domain.can_disable(actor, account)
        now = clock.now()
        done = store.disable_account(self.db, account["_id"], now)
        revocation = store.end_sessions_of(self.db, account["_id"], now, "account disabled")
        log.info("account %s disabled by %s", account["_id"], actor["sub"])
        return dict(domain.account_view(done), revocation=domain.revocation_view(revocation))

    @rpc
    def create_account(self, actor, payload, idempotency_key=None):
        """A union_admin creates a staff, merchant, employer or integrator account inside its scope."""
        require_role(actor, "union_admin")
        p = load(schemas.AccountCreate, payload)
        scope = domain.account_scope(actor, p, self._org_exists)
        region = self._bound_region(p)
        domain.require_bound_in_scope(actor, region)
        doc = domain.account_doc(p, scope, actor["sub"], clock.now(), region_code=region)

        def txn(session):
            store.insert_account(self.db, doc, session)
            return domain.account_view(doc)
        fingerprinted = {k: v for k, v in p.items() if k != "password"}
        return store.run_idempotent(self.db, "account:" + actor["sub"], idempotency_key, fingerprinted, txn)

    def _bound_region(self, p):
        """The region of the merchant or employer a new account is bound to (404 from its owner when unknown)."""
        if p.get("merchant_id"):
            return self.benefits.get_merchant(p["merchant_id"])["region_code"]
        if p.get("employer_id"):
            return self.jobs.get_employer(p["employer_id"])["region_code"]
        return None

    def _org_exists(self, org):
        if len(org) <= 6:
            return regions.is_known_prefix(org)
        return store.union_code_exists(self.db, org)

    # ---- unions ---------------------------------------------------------------------------------------------
    @rpc
    def list_unions(self, query=None):
        q = load(schemas.UnionListArgs, query or {})
        parent = q.get("parent_code")
        if parent and len(parent) < 6:
            parent = parent.ljust(6, "0")
        rows = store.list_unions(self.db, parent, q.get("level"), domain.decode_cursor(q["cursor"]), q["limit"])
        return domain.page([domain.union_view(u) for u in rows], q["limit"], lambda u: u["code"])

    @rpc
    def get_union(self, union_id):
        return domain.union_view(self._union(union_id))

    def _union(self, union_id, field="union"):
        union = store.union(self.db, union_id)
        if union is None:
            raise NotFound("No %s with id %s." % (field, union_id))
        return union

    @rpc
    def create_union(self, actor, payload, idempotency_key=None):
        """建会: a grassroots union under a county or prefecture union in the caller's scope."""
        require_role(actor, "union_admin")
        p = load(schemas.UnionCreate, payload)
        parent = self._union(p["parent_id"], "parent union")
        domain.check_union_parent(parent)
        require_scope(actor, parent["code"])

        def txn(session):
            code = domain.grassroots_code(parent["code"], store.next_child_seq(self.db, parent["_id"], session))
            doc = {"_id": domain.union_id_for(code), "code": code, "name": p["name"], "level": "grassroots",
                   "parent_id": parent["_id"], "parent_code": parent["code"], "region_code": parent["region_code"],
                   "auto_approve": p["auto_approve"], "uscc": p["uscc"], "created_by": actor["sub"],
                   "created_at": clock.now()}
            store.insert_union(self.db, doc, session)
            view = domain.union_view(doc)
            self.outbox.add(session, "union_created", {k: view[k] for k in (
                "code", "name", "level", "parent_id", "region_code", "auto_approve")} | {"union_id": doc["_id"]},
                subject=doc["_id"])
            return view
        return store.run_idempotent(self.db, "union:" + actor["sub"], idempotency_key, p, txn)

    # ---- members --------------------------------------------------------------------------------------------
    @rpc
    def join(self, actor, payload, idempotency_key=None):
        """一键入会: active at once in an auto-approve union (``member_joined``), pending otherwise."""
        require_role(actor, "member")
        p = load(schemas.JoinRequest, payload)
        phone = self._phone_of(actor["sub"])
        union = self._union(p["union_id"])
        domain.check_joinable(union)
        status = domain.initial_status(union)
        id_hash = crypto.keyed_hash(p["id_number"], "resident-id")
        year = clock.now().year
        card = domain.card_no(year, store.next_card_seq(self.db, year)) if status == "active" else None

        member_id = domain.new_id("mbr")  # one id for every attempt of this request's transaction

        def txn(session):
            now = clock.now()
            doc = {"_id": member_id, "user_id": actor["sub"], "union_id": union["_id"],
                   "union_code": union["code"], "region_code": union["region_code"],
                   "prefecture_code": regions.prefecture_of(union["region_code"]), "status": status,
                   "occupation_group": p["occupation_group"], "name": p["name"], "employer": p["employer"],
                   "id_hash": id_hash, "id_enc": crypto.encrypt(p["id_number"], "resident-id"),
                   "id_masked": ids.mask_id_number(p["id_number"]), "phone_masked": ids.mask_phone(phone),
                   "consent": {"version": domain.CONSENT_VERSION, "at": now}, "created_at": now, "updated_at": now,
                   "live_id": id_hash, "live_user": actor["sub"]}
            if status == "active":
                doc.update(card_no=card, joined_at=now)
            store.insert_member(self.db, doc, session)
            store.count_member(self.db, doc, [(status, 1)], session)
            if status == "active":
                self.outbox.add(session, "member_joined", domain.joined_data(doc, phone), subject=doc["_id"])
            return {"id": doc["_id"], "status": status, "card_no": doc.get("card_no"), "union_id": union["_id"]}
        try:
            return store.run_idempotent(self.db, "join:" + actor["sub"], idempotency_key, p, txn)
        except Conflict:
            # a commit whose answer was lost (the store restarted under it) is retried by the driver as a new
            # attempt, which finds the member that commit made: this request's own, not a second join
            done = store.member(self.db, member_id)
            if done is None:
                raise
            return {"id": done["_id"], "status": done["status"], "card_no": done.get("card_no"),
                    "union_id": done["union_id"]}

    @rpc
    def contact_phone(self, user_id):
        """``{"phone"}`` of a member's account, for notify when it must send them an SMS (events carry the masked
        form only). 404 when the account is unknown or erased. Only services reach RPC: the broker's integrator
        account cannot read or publish on the RPC exchange (deploy/rabbitmq/definitions.json)."""
        user = store.user(self.db, user_id) if isinstance(user_id, str) else None
        if not user or not user.get("phone_enc"):
            raise NotFound("No phone for this account.")
        return {"phone": crypto.decrypt(user["phone_enc"])}

    def _phone_of(self, user_id):
        user = store.user(self.db, user_id)
        if not user or not user.get("phone_enc"):
            raise Unauthorized("This account no longer exists; log in again.", code="INVALID_TOKEN")
        return crypto.decrypt(user["phone_enc"])

    @rpc
    def member_state(self, user_id):
        """For another service whose projection has not caught up with this member (read your own writes): the
        common data of membership events for the live membership, else the latest (None if never joined),
        ``joined_at`` (when it became active; None while pending) and ``as_of``, read *before* the member, so an
        event older than it cannot be newer than this answer."""
        if not isinstance(user_id, str) or not 0 < len(user_id) <= 64:
            raise validation_error({"user_id": ["must be a user id."]})
        as_of = clock.now()
        m = store.live_member_of(self.db, user_id) or store.latest_member_of(self.db, user_id)
        if m is None:
            return None
        return dict(domain.member_data(m), as_of=events.rfc3339(as_of), joined_at=events.rfc3339(m.get("joined_at")))

    @rpc
    def get_me(self, actor):
        """The caller's membership (the live one, else the latest), ID number and phone masked."""
        require_role(actor, "member")
        m = store.live_member_of(self.db, actor["sub"]) or store.latest_member_of(self.db, actor["sub"])
        if m is None:
            raise NotFound("You have not joined a union.")
        view = domain.member_view(m)
        pending = store.pending_transfer_of(self.db, m["_id"])
        view["pending_transfer"] = domain.transfer_view(pending) if pending else None
        return view

    @rpc
    def request_transfer(self, actor, payload):
        """转会: completed at once when the receiving union approves at once, else pending its approval."""
        require_role(actor, "member")
        p = load(schemas.TransferRequest, payload)
        m = self._live_member(actor)
        domain.check_transition(m["status"], "transfer")
        to = self._union(p["to_union_id"])
        domain.check_joinable(to)
        if to["_id"] == m["union_id"]:
            raise Conflict("You are already a member of this union.", code="SAME_UNION")

        def txn(session):
            now = clock.now()
            t = {"_id": domain.new_id("trf"), "member_id": m["_id"], "user_id": m["user_id"],
                 "from_union_id": m["union_id"], "from_union_code": m["union_code"], "to_union_id": to["_id"],
                 "to_union_code": to["code"], "status": "pending", "created_at": now}
            if not to.get("auto_approve"):
                store.insert_transfer(self.db, dict(t, live_member=m["_id"]), session)
                return domain.transfer_view(t)
            store.cancel_transfers(self.db, m["_id"], now, session)
            t.update(status="completed", decided_at=now, decided_by="auto_approve")
            store.insert_transfer(self.db, t, session)
            self._move(session, t, to, now)
            return domain.transfer_view(t)
        return transaction(self.db, txn)

    def _move(self, session, transfer, to, now):
        moved = store.move_member(self.db, transfer["member_id"], transfer["from_union_id"], to, now, session)
        if moved is None:
            raise Conflict("The member is no longer active in the union they asked to leave.", code="NOT_ACTIVE")
        was = dict(moved, union_id=transfer["from_union_id"], union_code=transfer["from_union_code"],
                   region_code=transfer["from_union_code"][:6],
                   prefecture_code=regions.prefecture_of(transfer["from_union_code"]))
        store.count_member(self.db, was, [("active", -1)], session)
        store.count_member(self.db, moved, [("active", 1)], session)
        self.outbox.add(session, "member_transferred", dict(
            domain.member_data(moved), from_union_id=transfer["from_union_id"],
            from_union_code=transfer["from_union_code"]), subject=moved["_id"])

    def _live_member(self, actor):
        m = store.live_member_of(self.db, actor["sub"])
        if m is None:
            raise NotFound("You are not a member of a union.")
        return m

    @rpc
    def leave(self, actor, erase=False):
        """Leave (``member_left``); with ``erase`` the person's name, ID number, employer and phone are erased.

        A former member who left without erasing may come back with ``erase`` to have the data erased.
        """
        require_role(actor, "member")
        erase = load(schemas.LeaveQuery, {"erase": erase})["erase"]
        m = store.live_member_of(self.db, actor["sub"])
        if m is None and erase:
            m = store.latest_member_of(self.db, actor["sub"])
        if m is None:
            raise NotFound("You are not a member of a union.")

        def txn(session):
            now = clock.now()
            if m["status"] in domain.LIVE_STATUSES:
                if store.leave(self.db, m["_id"], now, session) is None:
                    raise Conflict("The membership changed meanwhile; try again.", code="NOT_A_MEMBER")
                store.count_member(self.db, m, [(m["status"], -1), ("left", 1)], session)
                store.cancel_transfers(self.db, m["_id"], now, session)
            revocation = None
            if erase:
                store.erase_members(self.db, actor["sub"], session)
                store.erase_user(self.db, actor["sub"], session)
                revocation = store.end_sessions_of(self.db, actor["sub"], now, "erased", session=session)
            self.outbox.add(session, "member_left", {"member_id": m["_id"], "user_id": m["user_id"],
                                                     "union_id": m["union_id"], "erased": erase}, subject=m["_id"])
            return revocation
        revocation = transaction(self.db, txn)
        return domain.revocation_view(revocation) if revocation else None

    # ---- union staff ----------------------------------------------------------------------------------------
    def _in_scope_filter(self, actor, union_id):
        """(organisation prefix, union id) for a list in the caller's scope, checking a named union's scope."""
        prefix = domain.scope_of(actor)
        if union_id:
            require_scope(actor, self._union(union_id)["code"])
        return prefix, union_id

    @rpc
    def list_members(self, actor, query=None):
        q = load(schemas.MemberListArgs, query or {})
        prefix, union_id = self._in_scope_filter(actor, q.get("union_id"))
        rows = store.list_members(self.db, prefix, union_id, q.get("status"), domain.member_cursor(q["cursor"]),
                                  q["limit"])
        return domain.page([domain.member_view(m) for m in rows], q["limit"],
                           lambda m: "%s|%s" % (m["created_at"], m["id"]))

    def _member_in_scope(self, actor, member_id):
        return _in_scope(actor, store.member(self.db, member_id), "member", member_id, "union_code")

    @rpc
    def approve_member(self, actor, member_id):
        """pending -> active with a card number; ``member_joined``."""
        m = self._member_in_scope(actor, member_id)
        domain.check_transition(m["status"], "approve")
        phone = self._phone_of(m["user_id"])
        year = clock.now().year
        card = domain.card_no(year, store.next_card_seq(self.db, year))

        def txn(session):
            now = clock.now()
            active = store.activate(self.db, member_id, card, now, session)
            if active is None:
                raise Conflict("The member is no longer pending.", code="NOT_PENDING")
            store.count_member(self.db, active, [("pending", -1), ("active", 1)], session)
            self.outbox.add(session, "member_joined", domain.joined_data(active, phone), subject=member_id)
            return {"id": member_id, "status": "active", "card_no": card}
        return transaction(self.db, txn)

    @rpc
    def reject_member(self, actor, member_id, payload):
        """pending -> rejected with a reason; ``member_rejected``."""
        p = load(schemas.RejectRequest, payload)
        m = self._member_in_scope(actor, member_id)
        domain.check_transition(m["status"], "reject")

        def txn(session):
            rejected = store.reject(self.db, member_id, p["reason"], clock.now(), session)
            if rejected is None:
                raise Conflict("The member is no longer pending.", code="NOT_PENDING")
            store.count_member(self.db, rejected, [("pending", -1), ("rejected", 1)], session)
            self.outbox.add(session, "member_rejected", {"member_id": member_id, "user_id": m["user_id"],
                                                         "union_id": m["union_id"], "reason": p["reason"]},
                            subject=member_id)
            return {"id": member_id, "status": "rejected", "reason": p["reason"]}
        return transaction(self.db, txn)

    @rpc
    def list_transfers(self, actor, query=None):
        q = load(schemas.TransferListArgs, query or {})
        prefix, union_id = self._in_scope_filter(actor, q.get("union_id"))
        rows = store.list_transfers(self.db, prefix, union_id, q.get("status"), domain.decode_cursor(q["cursor"]),
                                    q["limit"])
        return domain.page([domain.transfer_view(t) for t in rows], q["limit"], lambda t: t["id"])

    def _transfer_in_scope(self, actor, transfer_id):
        # the receiving union decides
        return _in_scope(actor, store.transfer(self.db, transfer_id), "transfer", transfer_id, "to_union_code")

    @rpc
    def approve_transfer(self, actor, transfer_id):
        """The receiving union approves: the member moves; ``member_transferred``."""
        t = self._transfer_in_scope(actor, transfer_id)
        to = self._union(t["to_union_id"])

        def txn(session):
            now = clock.now()
            done = store.decide_transfer(self.db, transfer_id, "completed", actor["sub"], None, now, session)
            if done is None:
                raise Conflict("The transfer is %s, not pending." % t["status"], code="NOT_PENDING")
            self._move(session, done, to, now)
            return domain.transfer_view(done)
        return transaction(self.db, txn)

    @rpc
    def reject_transfer(self, actor, transfer_id, payload):
        p = load(schemas.RejectRequest, payload)
        self._transfer_in_scope(actor, transfer_id)

        def txn(session):
            done = store.decide_transfer(self.db, transfer_id, "rejected", actor["sub"], p["reason"], clock.now(), session)
            if done is None:
                raise Conflict("The transfer is not pending.", code="NOT_PENDING")
            return domain.transfer_view(done)
        return transaction(self.db, txn)

    @rpc
    def member_stats(self, actor, query=None):
        """Member counts in the caller's scope by prefecture, county, union or occupation group."""
        q = load(schemas.StatsQuery, query or {})
        prefix = domain.scope_of(actor)
        rows = store.count_members(self.db, prefix, q["status"], q["group_by"])
        if q["group_by"] == "union":
            names = store.union_names(self.db, [k for k, _ in rows])
        elif q["group_by"] in ("prefecture", "county"):
            names = regions.all_codes()
        else:
            names = {}
        items = [{"key": k, "name": names.get(k, k), "count": n} for k, n in rows]
        items.sort(key=lambda i: (-i["count"], str(i["key"])))
        return {"group_by": q["group_by"], "status": q["status"], "scope": prefix,
                "total": sum(i["count"] for i in items), "items": items}

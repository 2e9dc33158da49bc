"""The benefits service: merchants, coupon campaigns, claims that never oversell, redemption, expiry, statistics.

A claim needs no call to membership: eligibility comes from the member projection built from membership's events
(membership is asked only for a member the projection does not know as active yet: read your own writes).
Claims are decided by group commit (``unionhub_kit.batching``): the claims of one campaign reaching this process
together are decided from one read of the projection and written in one transaction (guarded stock writes per
bucket, one guarded update of the members' counts, ``insert_many`` of coupons, idempotency records and outbox rows),
each keeping its own answer. Campaign documents are cached briefly in the process's ``Memory`` (only their immutable
fields are used from the cache); the quota itself is enforced in the store.
"""
import datetime
import logging
import os
import random
import socket
import time

from nameko.exceptions import serialize

from unionhub_kit import clock, idempotency, projection
from unionhub_kit.batching import Batcher
from unionhub_kit.config import timer
from unionhub_kit.consumer import idempotent, on_event
from unionhub_kit.errors import AppError, Conflict, NotFound, ServiceTimeout, ServiceUnavailable
from unionhub_kit.metrics import ServiceMetrics
from unionhub_kit.memory import ProcessMemory
from unionhub_kit.mongo import Mongo, transaction
from unionhub_kit.outbox import Outbox
from unionhub_kit.ping import ping as _ping
from unionhub_kit.rpc import Rpc, affinity_rpc, rpc
from unionhub_kit.schema import load

from . import domain, schemas, store

log = logging.getLogger("unionhub.benefits")

CLAIM_WINDOW_MS = 2.0  # how long the first claim of a batch waits for others to join it
CAMPAIGN_CACHE_SECONDS = 30.0
CACHE_MAX = 5000
EXPIRY_BATCH = 500
EXPIRY_BATCHES_PER_TICK = 20
EXPIRY_GRACE = datetime.timedelta(minutes=5)  # claims still in flight at a deadline land within this

PROCESS = "%s-%d" % (socket.gethostname(), os.getpid())  # whose stock tallies this process writes
class Memory:
    """What this process remembers between claims (``ProcessMemory``: one per container)."""

    def __init__(self):
        self.campaigns = {}  # campaign id -> (valid until, document): immutable fields only are read from it
        self.sold_out = set()  # campaigns this process saw sold out (final: the stock never grows back)
        self.pools = {}  # campaign id -> domain.BucketPool

    def pool(self, campaign):
        """This process's lease pool of the campaign's stock buckets."""
        pool = self.pools.get(campaign["_id"])
        if pool is None:
            if len(self.pools) >= CACHE_MAX:
                self.pools.clear()
            count = campaign.get("buckets") or domain.bucket_count(campaign["quota"])
            pool = self.pools[campaign["_id"]] = domain.BucketPool(count, -(-campaign["quota"] // count))
        return pool


class _Recheck(Exception):
    """A member's guarded claim count did not move (not active any more, or at the limit through a concurrent
    claim): the batch is aborted and decided again."""


def _outcome(fn):
    """``fn()``, or the ``AppError`` it raised (a batch answers each claim with one or the other)."""
    try:
        return fn()
    except AppError as exc:
        return exc


def _claim_item(campaign_id, actor, idempotency_key, request_id):
    """What the group commit of claims carries for one claim (``_claim_batch``)."""
    key_id = idempotency.key_id(idempotency.scope("claim", actor["sub"]), idempotency_key) if idempotency_key else None
    return {"user_id": actor["sub"], "key_id": key_id, "request_id": request_id,
            "fp": idempotency.fingerprint({"campaign_id": campaign_id}) if key_id else None}


class BenefitsService:
    name = "benefits"
    db = Mongo(indexes=store.ensure_indexes)
    outbox = Outbox()
    metrics = ServiceMetrics()  # entrypoint latency/errors, request id in every log line
    claims = Batcher(window_ms=CLAIM_WINDOW_MS)  # group commit of the claims of one campaign
    memory = ProcessMemory(Memory)  # campaign cache, sold-out marks, stock-bucket leases of this process
    # membership is asked for a union's code when a campaign is limited to it (scope), and for the state of a member
    # the projection does not know as active yet (_catch_up, the rare path of a claim: short, a timeout only skips it)
    membership = Rpc("membership", timeout=2)

    @rpc
    def ping(self):
        return _ping(self.name, self.db)

    @rpc
    def get_merchant(self, merchant_id):
        """One merchant (404 when unknown): membership asks where a merchant account's merchant lies."""
        doc = store.merchant(self.db, merchant_id) if isinstance(merchant_id, str) else None
        if doc is None:
            raise NotFound("No merchant has the id %s." % merchant_id, code="NOT_FOUND")
        return domain.merchant_view(doc)

    # ---- merchants and campaigns (union staff) ----------------------------------------------------------------
    @rpc
    def create_merchant(self, actor, payload, idempotency_key=None):
        scope = domain.scope_of(actor)
        data = load(schemas.MerchantCreate, payload)
        domain.require_in_scope(data["region_code"], scope)
        now = clock.now()
        doc = dict(data, _id=domain.new_id("mer"), created_at=now, created_by=actor["sub"])

        def work(session):
            store.insert_merchant(self.db, doc, session)
            return domain.merchant_view(doc)
        return self._idempotent(actor, "create_merchant", idempotency_key, data, work)

    @rpc
    def create_campaign(self, actor, payload, idempotency_key=None):
        scope = domain.scope_of(actor)
        data = load(schemas.CampaignCreate, payload)
        for code in data["eligibility"]["region_codes"]:
            domain.require_in_scope(code, scope)
        merchant = store.merchant(self.db, data["merchant_id"])
        if merchant is None:
            raise NotFound("No merchant has the id %s." % data["merchant_id"], code="NOT_FOUND")
        domain.require_in_scope(merchant["region_code"], scope, "merchant's region")
        for union_id in data["eligibility"]["union_ids"]:  # NotFound from membership for an unknown union
            domain.require_in_scope(self.membership.get_union(union_id)["code"], scope, "union")
        now = clock.now()
        doc = domain.new_campaign(data, actor, scope, merchant, now)

        def work(session):
            store.insert_campaign(self.db, doc, session)
            self.outbox.add(session, "campaign_published", domain.published_data(doc), subject=doc["_id"])
            return domain.campaign_view(doc, now)
        result = self._idempotent(actor, "create_campaign", idempotency_key, schemas.CampaignCreate().dump(data), work)
        log.info("campaign %s published (quota %d)", result["id"], result["quota"])
        return result

    @rpc
    def list_campaigns(self, actor, args=None):
        args = load(schemas.CampaignListArgs, args or {})
        now = clock.now()
        docs = store.campaigns_page(self.db, store.campaign_filter(args, now), domain.decode_cursor(args["cursor"]),
                                    args["limit"])
        left = self._stock_left(docs)
        return domain.page([domain.campaign_view(c, now, left[c["_id"]]) for c in docs], args["limit"],
                           lambda v: v["id"])

    @rpc
    def get_campaign(self, actor, campaign_id):
        """The campaign (its immutable fields from this process's cache) with what is left read fresh."""
        doc = self._campaign(campaign_id)
        return domain.campaign_view(doc, clock.now(), self._stock_left([doc])[campaign_id])

    @rpc
    def stats(self, actor, args=None):
        """Claimed, redeemed and redeemed value per campaign, for campaigns in the caller's scope."""
        scope = domain.scope_of(actor)
        args = load(schemas.StatsArgs, args or {})
        now = clock.now()
        docs = store.scoped_campaigns_page(self.db, scope, args.get("status"), domain.decode_cursor(args["cursor"]),
                                           args["limit"], now)
        ids_ = [c["_id"] for c in docs]
        left, totals = store.stock_left(self.db, docs), store.redemption_totals(self.db, ids_)
        items = [domain.stats_view(c, left[c["_id"]], totals.get(c["_id"], {}), now) for c in docs]
        return domain.page(items, args["limit"], lambda v: v["campaign_id"])

    # ---- claims (members) -------------------------------------------------------------------------------------
    @rpc
    def claim(self, actor, campaign_id, idempotency_key=None):
        """Group commit: the claims of one campaign that reach this process within a few milliseconds are decided
        and written together (``_claim_batch``); each gets its own answer."""
        domain.require_role(actor, "member")
        self._campaign(campaign_id)  # 404 before joining a batch
        return self.claims.submit(campaign_id, _claim_item(campaign_id, actor, idempotency_key,
                                                           self.outbox.request_id), self._claim_batch)

    @rpc
    @affinity_rpc
    def claim_many(self, campaign_id, claims):
        """The claims of one campaign that reached one gateway process together (the gateway's own group commit:
        one call instead of one per claim), each answered on its own, in order: ``{"result": coupon}`` or
        ``{"error": <serialized AppError>}``. They join this process's group commit as one run, merged with what
        else waits for the campaign, so a second replica is handed whole batches instead of halving them.
        Served from the shared queue and from this replica's affinity queue (``unionhub_kit.affinity``): the
        gateway sends every batch of a campaign with the campaign as affinity key, so with several replicas one
        of them receives all of a campaign's batches and merges them (different campaigns spread over replicas).
        ``claims``: ``[{actor, idempotency_key, request_id}]`` (1-64, ``schemas.ClaimBatch``). An error that is
        not a client's (the store did not answer) fails the call, and with it every claim of the batch."""
        args = load(schemas.ClaimBatch, {"campaign_id": campaign_id, "claims": claims})
        self._campaign(args["campaign_id"])  # 404 for them all
        out, items, slots = [None] * len(args["claims"]), [], []
        for n, c in enumerate(args["claims"]):
            try:
                domain.require_role(c["actor"], "member")
            except AppError as exc:
                out[n] = exc
                continue
            items.append(_claim_item(args["campaign_id"], c["actor"], c["idempotency_key"],
                                     c["request_id"] or self.outbox.request_id))
            slots.append(n)
        for n, outcome in zip(slots, self.claims.submit_many(args["campaign_id"], items, self._claim_batch)):
            if isinstance(outcome, BaseException) and not isinstance(outcome, AppError):
                raise outcome
            out[n] = outcome
        return [{"error": serialize(o)} if isinstance(o, AppError) else {"result": o} for o in out]

    def _claim_batch(self, campaign_id, items):
        """One outcome per claim (a coupon view or the ``AppError`` refusing it). A batch whose guarded writes find
        a member changed under it (another replica's claim, a ``member_left``) or an Idempotency-Key taken by a
        concurrent request is aborted whole and decided again from fresh reads."""
        campaign = self._campaign(campaign_id)
        for _ in range(5):
            try:
                return self._try_claims(campaign, items)
            except (_Recheck, store.DuplicateKeyError):
                continue
        raise ServiceUnavailable("Too many concurrent changes to these members; try again.")

    def _try_claims(self, campaign, items):
        now = clock.now()
        out = [None] * len(items)
        # replays: a key seen before answers its first result; a key twice in this batch is decided once
        priors = idempotency.stored_results(self.db, [it["key_id"] for it in items])
        first, followers, todo = {}, {}, []
        for n, it in enumerate(items):
            kid = it["key_id"]
            if kid in priors:
                out[n] = _outcome(lambda: idempotency.replay(priors[kid], it["fp"]))
            elif kid and kid in first:
                followers[n] = first[kid]
            else:
                first[kid] = n
                todo.append(n)
        # decisions from the projection (one read for the batch), in arrival order
        users = [items[n]["user_id"] for n in todo]
        known = store.members(self.db, users)
        self._catch_up(known, users)
        decisions = domain.decide_claims(campaign, users, known, now, campaign["_id"] in self.memory.sold_out)
        accepted = [n for n, d in zip(todo, decisions) if d is None]
        for n, d in zip(todo, decisions):
            out[n] = d
        issued, short = [], []
        if accepted:
            coupons = {n: domain.new_coupon(campaign, items[n]["user_id"], now) for n in accepted}
            pool, leased = self.memory.pool(campaign), []
            try:
                issued, emptied = transaction(self.db, lambda session: self._write_claims(
                    session, campaign, items, accepted, coupons, pool, leased))
            except BaseException:
                pool.release(leased, conflicted=True)
                raise
            pool.release(leased)
            for n in issued:
                out[n] = domain.coupon_view(coupons[n], now)
            short = accepted[len(issued):]
            for n in short:
                out[n] = domain.sold_out()
            if emptied or short:  # this batch emptied a stock bucket (perhaps the last), or found none left
                self._announce_sold_out(campaign)
        # a refused keyed claim: a concurrent request with the same key may have just committed (its coupon is what
        # counts against the limit or took the last one): that request's answer is this one's too
        refused = [n for n in todo if isinstance(out[n], AppError) and items[n]["key_id"]]
        if refused:
            late = idempotency.stored_results(self.db, [items[n]["key_id"] for n in refused])
            for n in refused:
                if items[n]["key_id"] in late:
                    out[n] = _outcome(lambda: idempotency.replay(late[items[n]["key_id"]], items[n]["fp"]))
        for n, leader in followers.items():
            out[n] = out[leader]
        return out

    def _catch_up(self, known, users):
        """Read your own writes: a member the projection does not know as active may have been answered active by
        membership a moment ago (a join, an approval) while the event is still on its way. Membership is asked (one
        RPC, only on this rare path: claims by members who are not active) and an active answer is written to the
        projection as of when it was read, so older events cannot undo it. Nothing is remembered of a refusal:
        the next request after an approval must see it."""
        for uid in dict.fromkeys(users):
            if (known.get(uid) or {}).get("status") == "active":
                continue
            try:
                state = self.membership.member_state(uid)
            except (ServiceTimeout, ServiceUnavailable) as exc:
                log.warning("membership did not answer for a member the projection lacks: %s", exc)
                continue
            if state is None or state.get("status") != "active":
                continue
            as_of = projection.event_time({"time": state.pop("as_of")})
            known[uid] = transaction(self.db, lambda session: store.project_member(
                self.db, uid, projection.member_fields(state), as_of, session))

    def _write_claims(self, session, campaign, items, accepted, coupons, pool, leased):
        """The batch's transaction: the stock first (one write per bucket; the claims beyond what is left are sold
        out), then the guarded claim counts, the coupons, the remembered answers and the events, one write each.
        Returns (the claims issued, whether a bucket was emptied)."""
        pool.release(leased, conflicted=True)  # a retried attempt starts afresh, away from where it collided
        del leased[:]
        got, emptied = self._take_stock(session, campaign, len(accepted), pool, leased)
        issued = accepted[:got]
        if not issued:
            return issued, emptied
        store.tally_taken(self.db, campaign["_id"], PROCESS, got, session)
        per_user = {}
        for n in issued:
            per_user[items[n]["user_id"]] = per_user.get(items[n]["user_id"], 0) + 1
        if not store.count_claims(self.db, campaign["_id"], campaign["per_member_limit"], per_user, session):
            raise _Recheck()
        store.insert_coupons(self.db, [coupons[n] for n in issued], session)
        now = coupons[issued[0]]["claimed_at"]
        idempotency.remember(self.db, session, [(items[n]["key_id"], items[n]["fp"],
                                                 domain.coupon_view(coupons[n], now)) for n in issued
                                                if items[n]["key_id"]], now)
        self.outbox.add_many(session, [("coupon_claimed", domain.claimed_data(coupons[n]), coupons[n]["_id"],
                                        items[n]["request_id"]) for n in issued])
        return issued, emptied

    def _take_stock(self, session, campaign, want, pool, leased):
        """Up to ``want`` coupons' worth from the buckets this process leases (nearly always one write); then, if
        the pool has run dry, from any bucket with stock left. Returns (how many were taken, a bucket emptied?)."""
        got, emptied, learnt = 0, False, False
        while got < want:
            k = pool.lease()
            if k is None:
                break
            leased.append(k)
            ask = pool.ask(k, want - got)
            n, left = store.take_stock(self.db, campaign["_id"], k, ask, session)
            got += n
            pool.took(k, left)
            emptied = emptied or left == 0
            if n < ask and not learnt:
                # another replica took from this bucket: learn every bucket's level at once (one query) instead of
                # finding the buckets it emptied one guarded write and read at a time
                pool.learn(store.stock_levels(self.db, campaign["_id"], session))
                learnt = True
        while got < want:
            bucket = store.take_any_stock(self.db, campaign["_id"], random.random(), session)
            if bucket is None:
                break
            got += 1
            emptied = emptied or bucket["left"] == 0
        return got, emptied

    def _announce_sold_out(self, campaign):
        """``campaign_sold_out``, exactly once: a guarded mark in the event's own transaction, tried after the
        commit of each claim that emptied a stock bucket (the last of these to commit sees all the stock gone) and
        by a claim that found nothing left. A process that saw the campaign sold out remembers it for good."""
        if campaign["_id"] in self.memory.sold_out or store.any_stock_left(self.db, campaign["_id"]):
            return
        transaction(self.db, lambda session: self._mark_sold_out(session, campaign))
        self.memory.sold_out.add(campaign["_id"])  # marked now, by this transaction or an earlier one (none is left for good)

    def _mark_sold_out(self, session, campaign):
        if store.mark_sold_out(self.db, campaign["_id"], clock.now(), session):
            self.outbox.add(session, "campaign_sold_out", domain.sold_out_data(campaign), subject=campaign["_id"])
            log.info("campaign %s sold out (quota %d)", campaign["_id"], campaign["quota"])

    @rpc
    def my_coupons(self, actor, args=None):
        domain.require_role(actor, "member")
        args = load(schemas.CouponListArgs, args or {})
        now = clock.now()
        docs = store.coupons_page(self.db, actor["sub"], args.get("status"), domain.decode_cursor(args["cursor"]),
                                  args["limit"], now)
        return domain.page([domain.coupon_view(c, now) for c in docs], args["limit"], lambda v: v["id"])

    # ---- redemption (merchants) -------------------------------------------------------------------------------
    @rpc
    def redeem(self, actor, code):
        """unused -> redeemed, once, by the campaign's merchant, before the deadline."""
        domain.require_role(actor, "merchant")
        code = domain.normalize_code(code)
        coupon = store.coupon_by_code(self.db, code) if code else None
        now = clock.now()
        domain.check_redeem(coupon, actor, now)

        def txn(session):
            done = store.redeem(self.db, coupon["_id"], actor["merchant_id"], now, session)
            if done is not None:
                store.count_redemption(self.db, done, session)
                self.outbox.add(session, "coupon_redeemed", domain.redeemed_data(done), subject=done["_id"])
            return done
        done = transaction(self.db, txn)
        if done is None:  # another redemption, or the deadline, came first: say which
            domain.check_redeem(store.coupon_by_code(self.db, code), actor, now)
            raise Conflict("This coupon was already redeemed.", code="ALREADY_REDEEMED")
        return domain.redeemed_view(done)

    # ---- the member projection and welcome coupons ------------------------------------------------------------
    @on_event("membership", "member_joined")
    @idempotent
    def on_member_joined(self, event, session):
        """Project the member and issue, in the same transaction, one coupon of each live welcome campaign they are
        eligible for: once per campaign and member ever (a redelivered event or a later rejoin issues none)."""
        data = event["data"]
        member = store.project_member(self.db, data["user_id"], projection.member_fields(data),
                                      projection.event_time(event), session)
        if member.get("status") != "active":
            return
        now = clock.now()
        for campaign in store.live_welcome_campaigns(self.db, now):
            if domain.ineligibility(campaign, member) is None and campaign["_id"] not in self.memory.sold_out and \
                    domain.held(member, campaign["_id"]) < campaign["per_member_limit"] and \
                    store.grant_welcome(self.db, campaign["_id"], data["user_id"], now, session):
                self._welcome(session, campaign, data["user_id"], now)

    def _welcome(self, session, campaign, user_id, now):
        """A welcome coupon inside the handler's transaction. The stock comes first here: when the campaign is sold
        out nothing has been written for it and the handler goes on (its other writes must not be undone)."""
        bucket = store.take_any_stock(self.db, campaign["_id"], random.random(), session)
        if bucket is None or bucket["left"] == 0:
            self._mark_sold_out(session, campaign)
        if bucket is None:
            return
        store.tally_taken(self.db, campaign["_id"], PROCESS, 1, session)
        if not store.count_claim(self.db, user_id, campaign["_id"], campaign["per_member_limit"], session):
            raise RuntimeError("the member's claim count moved under the transaction")  # retried with the event
        coupon = domain.new_coupon(campaign, user_id, now, welcome=True)
        store.insert_coupon(self.db, coupon, session)
        self.outbox.add(session, "coupon_claimed", domain.claimed_data(coupon), subject=coupon["_id"])

    @on_event("membership", "member_transferred")
    @idempotent
    def on_member_transferred(self, event, session):
        data = event["data"]
        store.project_member(self.db, data["user_id"], projection.member_fields(data), projection.event_time(event),
                             session)

    @on_event("membership", "member_left")
    @idempotent
    def on_member_left(self, event, session):
        """A member who left cannot claim; benefits keeps no personal data to erase."""
        data = event["data"]
        store.project_member(self.db, data["user_id"], {"member_id": data["member_id"], "status": "left"},
                             projection.event_time(event), session)

    # ---- maintenance ------------------------------------------------------------------------------------------
    @timer("BENEFITS_SWEEP_SECONDS")
    def maintain(self):
        """Expire unused coupons past their deadline, in batches. Idempotent: any replica, any number of times
        (each coupon moves ``unused -> expired`` under a guard, once)."""
        now = clock.now()
        for c in store.campaigns_due_for_expiry(self.db, now):
            changed = 0
            for _ in range(EXPIRY_BATCHES_PER_TICK):
                n = store.expire_batch(self.db, c["_id"], now, EXPIRY_BATCH)
                changed += n
                if n < EXPIRY_BATCH:
                    break
            if changed:
                log.info("expired %d unused coupon(s) of campaign %s", changed, c["_id"])
            elif c["redeem_ends_at"] < now - EXPIRY_GRACE:
                store.mark_expiry_done(self.db, c["_id"])

    # ---- helpers ----------------------------------------------------------------------------------------------
    def _campaign(self, campaign_id):
        """The campaign (cached briefly: only its immutable fields are used from here) or 404."""
        hit = self.memory.campaigns.get(campaign_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        doc = store.campaign(self.db, campaign_id) if isinstance(campaign_id, str) else None
        if doc is None:
            raise NotFound("No campaign has the id %s." % campaign_id, code="NOT_FOUND")
        if len(self.memory.campaigns) >= CACHE_MAX:
            self.memory.campaigns.clear()
        self.memory.campaigns[campaign_id] = (time.monotonic() + CAMPAIGN_CACHE_SECONDS, doc)
        return doc

    def _stock_left(self, campaigns):
        """What is left of each campaign, never more than what is: read fresh (one small query for them all),
        except for campaigns this process saw sold out (nothing is left of them for good)."""
        out = {c["_id"]: 0 for c in campaigns if c["_id"] in self.memory.sold_out}
        missing = [c for c in campaigns if c["_id"] not in out]
        if missing:
            out.update(store.stock_left(self.db, missing))
        return out

    def _idempotent(self, actor, operation, key, request, work):
        """Run ``work(session)`` in a transaction; with an Idempotency-Key its result is stored in the same
        transaction and a repeat of the key answers the first result again (``unionhub_kit.idempotency``)."""
        return idempotency.run_idempotent(self.db, idempotency.scope(operation, actor["sub"]), key, request, work)

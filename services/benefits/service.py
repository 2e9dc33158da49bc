"""The benefits service: merchants, coupon campaigns, claims that never oversell, redemption, expiry, statistics.

A claim needs no call to membership: eligibility comes from the member projection built from membership's events.
The hot path of a claim is one read (the member) and one transaction: the member's claim count (guarded by the
per-member limit), the coupon, the ``coupon_claimed`` event in the outbox and, last, a guarded decrement of one of
the campaign's stock buckets (see ``domain``). Campaign documents are cached briefly in-process (only their
immutable fields are used from the cache); the quota itself is enforced in the store.
"""
import datetime
import logging
import os
import random
import time

from nameko.timer import timer

from unionhub_kit import events
from unionhub_kit.consumer import idempotent, on_event
from unionhub_kit.errors import AppError, Conflict, NotFound
from unionhub_kit.metrics import ServiceMetrics
from unionhub_kit.mongo import Mongo, transaction
from unionhub_kit.outbox import Outbox
from unionhub_kit.ping import ping as _ping
from unionhub_kit.rpc import rpc
from unionhub_kit.schema import load

from . import domain, schemas, store

log = logging.getLogger("unionhub.benefits")

SWEEP_SECONDS = float(os.environ.get("BENEFITS_SWEEP_SECONDS", "10"))
CAMPAIGN_CACHE_SECONDS = 30.0
LEFT_CACHE_SECONDS = 1.0
CACHE_MAX = 5000
EXPIRY_BATCH = 500
EXPIRY_BATCHES_PER_TICK = 20
EXPIRY_GRACE = datetime.timedelta(minutes=5)  # claims still in flight at a deadline land within this

_campaigns = {}  # campaign id -> (valid until, document): immutable fields only are read from it
_sold_out = set()  # campaigns this process saw sold out (final: the stock never grows back)
_left = {}  # campaign id -> (valid until, coupons left): for lists only
_pools = {}  # campaign id -> domain.BucketPool


def _pool(campaign):
    """This process's lease pool of the campaign's stock buckets."""
    pool = _pools.get(campaign["_id"])
    if pool is None:
        if len(_pools) >= CACHE_MAX:
            _pools.clear()
        pool = _pools[campaign["_id"]] = domain.BucketPool(
            campaign.get("buckets") or domain.bucket_count(campaign["quota"]))
    return pool


class _Refused(Exception):
    """The member's guarded claim count did not move: not active any more, or at the per-member limit."""


class _SoldOut(Exception):
    """No stock bucket of the campaign has anything left."""


def _is_dup(exc, *fields):
    return set((exc.details or {}).get("keyPattern", {})) == set(fields)


class BenefitsService:
    name = "benefits"
    db = Mongo(indexes=store.ensure_indexes)
    outbox = Outbox()
    metrics = ServiceMetrics()  # entrypoint latency/errors, request id in every log line

    @rpc
    def ping(self):
        return _ping(self.name, self.db)

    # ---- merchants and campaigns (union staff) ----------------------------------------------------------------
    @rpc
    def create_merchant(self, actor, payload, idempotency_key=None):
        scope = domain.scope_of(actor)
        data = load(schemas.MerchantCreate, payload)
        domain.require_in_scope(data["region_code"], scope)
        now = events.utcnow()
        doc = dict(data, _id=domain.new_id("mer"), created_at=now, created_by=actor["sub"])

        def work(session):
            try:
                store.insert_merchant(self.db, doc, session)
            except store.DuplicateKeyError as exc:
                if _is_dup(exc, "uscc"):
                    raise Conflict("A merchant with this USCC exists already.", code="MERCHANT_EXISTS")
                raise
            return domain.merchant_view(doc)
        return self._idempotent(actor, "merchant", idempotency_key, data, work)

    @rpc
    def create_campaign(self, actor, payload, idempotency_key=None):
        scope = domain.scope_of(actor)
        data = load(schemas.CampaignCreate, payload)
        for code in data["eligibility"]["region_codes"]:
            domain.require_in_scope(code, scope)
        merchant = store.merchant(self.db, data["merchant_id"])
        if merchant is None:
            raise NotFound("No merchant has the id %s." % data["merchant_id"], code="NOT_FOUND")
        now = events.utcnow()
        doc = domain.new_campaign(data, actor, scope, merchant, now)

        def work(session):
            store.insert_campaign(self.db, doc, session)
            self.outbox.add(session, "campaign_published", domain.published_data(doc), subject=doc["_id"])
            return domain.campaign_view(doc, now)
        result = self._idempotent(actor, "campaign", idempotency_key, schemas.CampaignCreate().dump(data), work)
        log.info("campaign %s published (quota %d)", result["id"], result["quota"])
        return result

    @rpc
    def list_campaigns(self, actor, args=None):
        args = load(schemas.CampaignListArgs, args or {})
        now = events.utcnow()
        docs = store.campaigns_page(self.db, store.campaign_filter(args, now), domain.decode_cursor(args["cursor"]),
                                    args["limit"])
        left = self._stock_left([c["_id"] for c in docs])
        return domain.page([domain.campaign_view(c, now, left[c["_id"]]) for c in docs], args["limit"],
                           lambda v: v["id"])

    @rpc
    def get_campaign(self, actor, campaign_id):
        doc = store.campaign(self.db, campaign_id) if isinstance(campaign_id, str) else None
        if doc is None:
            raise NotFound("No campaign has the id %s." % campaign_id, code="NOT_FOUND")
        return domain.campaign_view(doc, events.utcnow(), store.stock_left(self.db, [campaign_id])[campaign_id])

    @rpc
    def stats(self, actor, args=None):
        """Claimed, redeemed and redeemed value per campaign, for campaigns in the caller's scope."""
        scope = domain.scope_of(actor)
        args = load(schemas.StatsArgs, args or {})
        now = events.utcnow()
        flt = dict(domain.status_filter(args.get("status"), now), area_path=scope)
        docs = store.campaigns_page(self.db, flt, domain.decode_cursor(args["cursor"]), args["limit"])
        ids_ = [c["_id"] for c in docs]
        left, totals = store.stock_left(self.db, ids_), store.redemption_totals(self.db, ids_)
        items = [domain.stats_view(c, left[c["_id"]], totals.get(c["_id"], {}), now) for c in docs]
        return domain.page(items, args["limit"], lambda v: v["campaign_id"])

    # ---- claims (members) -------------------------------------------------------------------------------------
    @rpc
    def claim(self, actor, campaign_id, idempotency_key=None):
        domain.require_role(actor, "member")
        user_id = actor["sub"]
        key_id = fingerprint = None
        if idempotency_key:
            key_id = domain.idempotency_id(actor, "claim", idempotency_key)
            fingerprint = domain.fingerprint({"campaign_id": campaign_id})
            prior = store.idempotent_result(self.db, key_id)
            if prior is not None:
                return self._repeat(prior, fingerprint)
        campaign = self._campaign(campaign_id)
        now = events.utcnow()
        try:
            domain.check_claim(campaign, store.member(self.db, user_id), now)
            if campaign_id in _sold_out:
                raise domain.sold_out()
        except AppError:
            # a concurrent request with the same Idempotency-Key may have committed between the lookup above and
            # the checks (its coupon now counts against the limit): that request's answer is this one's too
            prior = store.idempotent_result(self.db, key_id) if key_id else None
            if prior is not None:
                return self._repeat(prior, fingerprint)
            raise
        coupon = domain.new_coupon(campaign, user_id, now)
        pool, leased = _pool(campaign), []
        try:
            bucket = transaction(self.db, lambda session: self._issue(session, campaign, coupon, key_id, fingerprint,
                                                                      pool, leased))
        except (_SoldOut, _Refused, store.DuplicateKeyError) as exc:
            # the same Idempotency-Key may have won a race (and taken the last coupon or the member's last claim)
            prior = store.idempotent_result(self.db, key_id) if key_id else None
            if prior is not None:
                return self._repeat(prior, fingerprint)
            if isinstance(exc, _SoldOut):
                self._announce_sold_out(campaign)
                raise domain.sold_out()
            if isinstance(exc, _Refused):
                why = domain.ineligibility(campaign, store.member(self.db, user_id))
                raise domain.not_eligible(why) if why else domain.limit_reached(campaign)
            raise
        finally:
            pool.release(leased)
        if bucket["left"] == 0:  # this claim emptied a stock bucket: perhaps the last one
            self._announce_sold_out(campaign)
        return domain.coupon_view(coupon, now)

    def _issue(self, session, campaign, coupon, key_id, fingerprint, pool, leased):
        """In a claim's transaction: the guarded count, the coupon, the remembered answer, the event, and last the
        stock (the write most likely to meet a concurrent claim, so it is held for the shortest time). Returns the
        stock bucket after the decrement; the buckets it leased are in ``leased``."""
        pool.release(leased)  # a retried attempt starts afresh
        del leased[:]
        if not store.count_claim(self.db, coupon["user_id"], campaign["_id"], campaign["per_member_limit"], session):
            raise _Refused()
        store.insert_coupon(self.db, coupon, session)
        if key_id:
            store.remember_result(self.db, key_id, fingerprint, domain.coupon_view(coupon, coupon["claimed_at"]),
                                  coupon["claimed_at"], session)
        self.outbox.add(session, "coupon_claimed", domain.claimed_data(coupon), subject=coupon["_id"])
        bucket = self._take_stock(session, campaign, pool, leased)
        if bucket is None:
            raise _SoldOut()
        return bucket

    def _take_stock(self, session, campaign, pool, leased):
        """A bucket this process leases to the claim (a few tries), else any bucket with stock left, else None."""
        for _ in range(3):
            k = pool.lease()
            if k is None:
                break
            leased.append(k)
            bucket = store.take_stock(self.db, campaign["_id"], k, session)
            if bucket is not None:
                if bucket["left"] == 0:
                    pool.emptied(k)
                return bucket
            pool.emptied(k)
        return store.take_any_stock(self.db, campaign["_id"], random.random(), session)

    def _announce_sold_out(self, campaign):
        """``campaign_sold_out``, exactly once: a guarded mark in the event's own transaction, tried after the
        commit of each claim that emptied a stock bucket (the last of these to commit sees all the stock gone) and
        by a claim that found nothing left. A process that saw the campaign sold out remembers it for good."""
        if campaign["_id"] in _sold_out:
            return
        transaction(self.db, lambda session: self._mark_sold_out(session, campaign))
        if store.campaign(self.db, campaign["_id"]).get("sold_out_at"):
            _sold_out.add(campaign["_id"])

    def _mark_sold_out(self, session, campaign):
        if store.mark_sold_out(self.db, campaign["_id"], events.utcnow(), session):
            self.outbox.add(session, "campaign_sold_out", domain.sold_out_data(campaign), subject=campaign["_id"])
            log.info("campaign %s sold out (quota %d)", campaign["_id"], campaign["quota"])

    @rpc
    def my_coupons(self, actor, args=None):
        domain.require_role(actor, "member")
        args = load(schemas.CouponListArgs, args or {})
        now = events.utcnow()
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
        now = events.utcnow()
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
        member = store.apply_member_event(self.db, data["user_id"], domain.projection_fields(data),
                                          events.parse_time(event["time"]), session)
        if member.get("status") != "active":
            return
        now = events.utcnow()
        for campaign in store.live_welcome_campaigns(self.db, now):
            if domain.ineligibility(campaign, member) is None and campaign["_id"] not in _sold_out and \
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
        if not store.count_claim(self.db, user_id, campaign["_id"], campaign["per_member_limit"], session):
            raise RuntimeError("the member's claim count moved under the transaction")  # retried with the event
        coupon = domain.new_coupon(campaign, user_id, now, welcome=True)
        store.insert_coupon(self.db, coupon, session)
        self.outbox.add(session, "coupon_claimed", domain.claimed_data(coupon), subject=coupon["_id"])

    @on_event("membership", "member_transferred")
    @idempotent
    def on_member_transferred(self, event, session):
        data = event["data"]
        store.apply_member_event(self.db, data["user_id"], domain.projection_fields(data),
                                 events.parse_time(event["time"]), session)

    @on_event("membership", "member_left")
    @idempotent
    def on_member_left(self, event, session):
        """A member who left cannot claim; benefits keeps no personal data to erase."""
        data = event["data"]
        store.apply_member_event(self.db, data["user_id"], {"member_id": data["member_id"], "status": "left"},
                                 events.parse_time(event["time"]), session)

    # ---- maintenance ------------------------------------------------------------------------------------------
    @timer(interval=SWEEP_SECONDS)
    def maintain(self):
        """Expire unused coupons past their deadline, in batches. Idempotent: any replica, any number of times
        (each coupon moves ``unused -> expired`` under a guard, once)."""
        now = events.utcnow()
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
        hit = _campaigns.get(campaign_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        doc = store.campaign(self.db, campaign_id) if isinstance(campaign_id, str) else None
        if doc is None:
            raise NotFound("No campaign has the id %s." % campaign_id, code="NOT_FOUND")
        if len(_campaigns) >= CACHE_MAX:
            _campaigns.clear()
        _campaigns[campaign_id] = (time.monotonic() + CAMPAIGN_CACHE_SECONDS, doc)
        return doc

    def _stock_left(self, campaign_ids):
        """What is left of each campaign, for lists: read at most once a second per campaign and process (a list
        page would otherwise sum every stock bucket of every campaign on it); a single campaign is read fresh."""
        now = time.monotonic()
        out = {cid: 0 for cid in campaign_ids if cid in _sold_out}
        for cid in campaign_ids:
            hit = _left.get(cid)
            if cid not in out and hit is not None and hit[0] > now:
                out[cid] = hit[1]
        missing = [cid for cid in campaign_ids if cid not in out]
        if missing:
            if len(_left) >= CACHE_MAX:
                _left.clear()
            for cid, left in store.stock_left(self.db, missing).items():
                _left[cid] = (now + LEFT_CACHE_SECONDS, left)
                out[cid] = left
        return out

    def _repeat(self, prior, fingerprint):
        if prior["fingerprint"] != fingerprint:
            raise domain.key_reused()
        return prior["result"]

    def _idempotent(self, actor, operation, key, request, work):
        """Run ``work(session)`` in a transaction; with an Idempotency-Key its result is stored in the same
        transaction and a repeat of the key answers the first result again."""
        key_id = fingerprint = None
        if key:
            key_id = domain.idempotency_id(actor, operation, key)
            fingerprint = domain.fingerprint(request)
            prior = store.idempotent_result(self.db, key_id)
            if prior is not None:
                return self._repeat(prior, fingerprint)
        now = events.utcnow()

        def txn(session):
            result = work(session)
            if key_id:
                store.remember_result(self.db, key_id, fingerprint, result, now, session)
            return result
        try:
            return transaction(self.db, txn)
        except store.DuplicateKeyError as exc:
            if key_id and _is_dup(exc, "_id"):
                prior = store.idempotent_result(self.db, key_id)
                if prior is not None:
                    return self._repeat(prior, fingerprint)
            raise

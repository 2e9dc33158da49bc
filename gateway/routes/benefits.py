"""Benefits routes of API.md: merchants, campaigns, claims, a member's coupons, redemption, statistics."""
import zlib

import eventlet
from nameko.exceptions import MethodNotFound, deserialize

from services.benefits import schemas
from unionhub_kit import clock, events
from unionhub_kit.affinity import with_affinity
from unionhub_kit.errors import AppError

from .. import cache_events
from ..framework import SHORT_CACHE_SECONDS as CACHE_SECONDS, route

TAGS = ["Benefits"]
CLAIM_WINDOW_MS = 2.0  # how long the first claim of a gateway batch waits for others (``claim_batch``)
# Batches of one campaign on their way at once (``unionhub_kit.batching`` lanes): another opens when CLAIM_LANE_AT
# claims wait, or when a claim has waited CLAIM_LANE_WAIT_MS, while a lane is free. Measured 2026-12-06 afternoon
# (bench.flash_grab: 2,000 members, quota 500, 64 connections, the median of 3 rounds; bench.run_all: 8 claiming
# connections beside 32 reading ones, and 32 claiming), with one RPC per claim before batching: 124.5 claims/s beside
# the reads. 2 lanes opening at 32 waiting: 669-701 answers/s with one benefits replica, 664-729 with two, but 41.7
# claims/s beside the reads (a batch's round trip through a gateway busy with reads is slow, and only one was on its
# way). 4 lanes at 8: 805 / 722 and 109. 4 lanes at 32 or after 20 ms: 864 / 905 and 784 / 903 (two replicas 1.05x
# and 1.15x of one), 127.8 claims/s beside the reads, 415 claims/s at 32 connections.
CLAIM_LANES = 4
CLAIM_LANE_AT = 32
CLAIM_LANE_WAIT_MS = 20.0


@route("POST", "/api/v1/merchants", roles=["union_admin"], body=schemas.MerchantCreate, status=201, idempotent=True,
       tags=TAGS, response=schemas.MerchantAnswer,
       errors=("403 OUT_OF_SCOPE", "409 MERCHANT_EXISTS", "422 IDEMPOTENCY_KEY_REUSED"))
def create_merchant(gw, call):
    """Register a merchant (USCC checked) in a region of the caller's scope"""
    return gw.benefits.create_merchant(call.actor, schemas.MerchantCreate().dump(call.body), call.idempotency_key)


@route("POST", "/api/v1/campaigns", roles=["union_admin"], body=schemas.CampaignCreate, status=201, idempotent=True,
       tags=TAGS, response=schemas.CampaignAnswer, errors=("403 OUT_OF_SCOPE", "404 NOT_FOUND", "422 IDEMPOTENCY_KEY_REUSED"))
def create_campaign(gw, call):
    """Publish a coupon campaign for regions in the caller's scope"""
    return gw.benefits.create_campaign(call.actor, schemas.CampaignCreate().dump(call.body), call.idempotency_key)


LIVE_CACHE_SECONDS = 1.0  # the hard bound on a live campaign's answer kept by a gateway process


def honest_seconds(campaign):
    """How long an answer about ``campaign`` may be reused, as ``(seconds this gateway keeps it, seconds clients
    may)``, without its ``remaining`` being more than what is left for longer than the guarantee below.

    * ended or sold out: it cannot change (``SHORT_CACHE_SECONDS``, clients too);
    * upcoming: until it opens;
    * live with stock: its stock only goes down. This gateway keeps the answer (at most ``LIVE_CACHE_SECONDS``,
      never past its end) only while it hears benefits' stock events (``gateway.cache_events``); clients get
      ``no-cache`` (they revalidate: a 304 while nothing changed), since no one can tell them of a claim.
      What ``remaining`` then says: a claim answered through this gateway process is reflected by the very next
      read (the 201 drops the campaign's answers first); a claim through another gateway replica or a welcome
      coupon (a join) is reflected once its ``coupon_claimed`` event reaches this process (the event hop: ~20 ms
      p50, see ``bench.event_hop``), and never later than ``LIVE_CACHE_SECONDS`` (a lost event, a broker away).
      Not subscribed (starting, broker away): not kept at all, every read is fresh."""
    if campaign.get("remaining") == 0 or campaign.get("status") == "ended":
        return CACHE_SECONDS
    now = clock.now()
    if campaign.get("status") == "upcoming":
        opens = events.parse_time(campaign["claim_starts_at"]) - now
        return max(0.0, min(CACHE_SECONDS, opens.total_seconds()))
    if not cache_events.live():
        return 0
    ends = (events.parse_time(campaign["claim_ends_at"]) - now).total_seconds()
    return max(0.0, min(LIVE_CACHE_SECONDS, ends)), 0


def honest_page_seconds(page):
    """The shortest of the page's campaigns (and ``no-cache`` for clients when any of them is live)."""
    keep, clients = CACHE_SECONDS, CACHE_SECONDS
    for c in page.get("items", []):
        s = honest_seconds(c)
        k, m = s if isinstance(s, tuple) else (s, s)
        keep, clients = min(keep, k), min(clients, m)
    return (keep, clients) if clients != keep else keep


@route("GET", "/api/v1/campaigns", query=schemas.CampaignListArgs, tags=TAGS, response=schemas.CampaignPage,
       cache=honest_page_seconds)
def list_campaigns(gw, call):
    """Campaigns, newest first, each with `remaining`"""
    return gw.benefits.list_campaigns(call.actor, call.query)


@route("GET", "/api/v1/campaigns/<campaign_id>", tags=TAGS, response=schemas.CampaignAnswer, errors=("404 NOT_FOUND",),
       cache=honest_seconds)
def get_campaign(gw, call):
    """One campaign with `remaining`"""
    return gw.benefits.get_campaign(call.actor, call.path_params["campaign_id"])


@route("POST", "/api/v1/campaigns/<campaign_id>/claims", roles=["member"], status=201, idempotent=True, tags=TAGS,
       response=schemas.CouponAnswer, errors=("403 NOT_ELIGIBLE", "404 NOT_FOUND", "409 NOT_OPEN", "409 SOLD_OUT",
                                              "409 LIMIT_REACHED", "422 IDEMPOTENCY_KEY_REUSED"))
def claim(gw, call):
    """Claim a coupon: `{code, campaign_id, status: "unused", expires_at}`"""
    item = {"actor": call.actor, "idempotency_key": call.idempotency_key, "request_id": call.request_id}
    campaign_id = call.path_params["campaign_id"]
    key = claim_key(campaign_id, call.actor["sub"], claim_shards(gw.setting("CLAIM_AFFINITY_SHARDS")))
    return gw.claims.submit(key, item, lambda key, items: claim_batch(gw.benefits, campaign_id, items, key))


MAX_CLAIM_SHARDS = 64


def claim_shards(setting):
    """The ``CLAIM_AFFINITY_SHARDS`` setting (the gateway's config or environment, as every setting is read) within
    1-``MAX_CLAIM_SHARDS``."""
    return max(1, min(MAX_CLAIM_SHARDS, setting))


def claim_key(campaign_id, user_id, shards=1):
    """The group-commit and affinity key of a member's claim. With one shard (the default) it is the campaign: all
    its claims are batched together and decided by one benefits replica, which merges the batches of every gateway
    process into the fewest transactions (on one store, a second replica deciding half of a campaign's claims
    costs more than it adds: ``bench.flash_grab``). With ``shards`` > 1 a campaign's members are split by a
    stable hash of their id (CRC-32: the same in every gateway process) into that many keys, each batched apart
    and hashed to its own replica, for a grab bigger than one benefits process can decide (docs/capacity.md
    section 3); each replica takes from its own stock buckets, so the shards do not conflict."""
    if shards <= 1:
        return campaign_id
    return "%s|%d" % (campaign_id, zlib.crc32(user_id.encode("utf-8")) % shards)


def claim_batch(benefits, campaign_id, items, affinity_key=None):
    """The claims of one campaign reaching this gateway process together (``gw.claims``, a group commit: the first
    waits ``CLAIM_WINDOW_MS`` for others, and those arriving while a batch is on its way form the next) go to
    benefits in one call, ``claim_many``, and each request gets its own answer back. One RPC instead of one per
    claim saves the gateway, the broker and benefits a message each; and the batch reaches one benefits replica
    whole, so replicas no longer halve each other's group commits (``bench.flash_grab``). The campaign is the call's
    affinity key (``unionhub_kit.affinity``): every batch of a campaign, from every gateway process, reaches the
    same benefits replica, which merges them into bigger transactions; campaigns spread over replicas, and without
    the broker plugin (or with ``RPC_AFFINITY`` off) the batches take the shared queue. A replica dying with a batch
    answers it with the RPC timeout's 504, as before. A benefits process from before ``claim_many`` (a rolling
    upgrade) is called once per claim. ``affinity_key``: the batch's key (``claim_key``; default the campaign)."""
    try:
        answers = with_affinity(benefits, affinity_key or campaign_id).claim_many(campaign_id, items)
    except MethodNotFound:
        pile = eventlet.GreenPile(len(items))
        for it in items:
            pile.spawn(_outcome, benefits.claim, it["actor"], campaign_id, it["idempotency_key"])
        return list(pile)
    if not isinstance(answers, list) or len(answers) != len(items):
        raise RuntimeError("claim_many answered %d claims with %r" % (len(items), type(answers)))
    return [deserialize(a["error"]) if "error" in a else a["result"] for a in answers]


def _outcome(fn, *args):
    try:
        return fn(*args)
    except AppError as exc:
        return exc


@route("GET", "/api/v1/members/me/coupons", roles=["member"], query=schemas.CouponListArgs, tags=TAGS,
       response=schemas.CouponPage)
def my_coupons(gw, call):
    """The caller's coupons, newest first"""
    return gw.benefits.my_coupons(call.actor, call.query)


@route("POST", "/api/v1/coupons/<code>/redeem", roles=["merchant"], tags=TAGS, response=schemas.RedeemAnswer,
       errors=("404 NOT_FOUND", "409 ALREADY_REDEEMED", "410 EXPIRED"))
def redeem(gw, call):
    """Redeem a coupon by its code (the campaign's merchant only)"""
    return gw.benefits.redeem(call.actor, call.path_params["code"])


@route("GET", "/api/v1/admin/stats/benefits", roles=["union_admin"], query=schemas.StatsArgs, tags=TAGS,
       response=schemas.StatsPage)
def stats(gw, call):
    """Claimed, redeemed and redeemed value per campaign in the caller's scope"""
    return gw.benefits.stats(call.actor, call.query)

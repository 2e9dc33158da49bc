"""The benefits service on the real broker and store: merchants, campaigns, claims, welcome coupons, redemption,
expiry, sell-out and statistics (RPC through nameko entrypoints, events through RabbitMQ)."""
import datetime
import uuid

import eventlet
import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import dummy, entrypoint_hook
from nameko.testing.utils import get_extension

from services.benefits import store
from services.benefits.service import BenefitsService
from unionhub_kit import affinity, clock, events
from unionhub_kit.affinity import with_affinity
from unionhub_kit.errors import AppError
from unionhub_kit.memory import ProcessMemory
from unionhub_kit.rpc import Rpc
from support.builders import campaign_body, joined_event, left_event, merchant_body, new_uscc
from support.stack import wait_for

ADMIN = {"sub": "acc_admin", "role": "union_admin", "scope": "51", "merchant_id": None, "employer_id": None}
CHENGDU_ADMIN = dict(ADMIN, sub="acc_cd", scope="5101")
JINJIANG_ADMIN = dict(ADMIN, sub="acc_jj", scope="510104")


def now():
    return clock.now()


def iso(dt):
    return events.rfc3339(dt)


def member_actor(user_id):
    return {"sub": user_id, "role": "member", "scope": None, "merchant_id": None, "employer_id": None}


def merchant_actor(merchant_id):
    return {"sub": "acc_" + merchant_id, "role": "merchant", "scope": None, "merchant_id": merchant_id,
            "employer_id": None}


@pytest.fixture
def svc(container_factory, config):
    container = container_factory(BenefitsService, config)
    container.start()
    return container


@pytest.fixture
def call(svc):
    def call(method, *args):
        with entrypoint_hook(svc, method) as fn:
            return fn(*args)
    return call


@pytest.fixture
def fails(call):
    """``fails(status, code, method, *args)``: the call raises the AppError with that status and code."""
    def fails(status, code, method, *args):
        with pytest.raises(AppError) as exc:
            call(method, *args)
        assert (exc.value.status, exc.value.code) == (status, code), exc.value
        return exc.value
    return fails


@pytest.fixture
def db(db_of):
    return db_of("benefits")


@pytest.fixture
def publish(config):
    dispatch = event_dispatcher(config)
    return lambda env: dispatch("membership", env["type"].split(".")[3], env)


@pytest.fixture
def members(publish, db):
    """``members(n, **kw)``: n fresh active members projected into benefits; returns their user ids."""
    def make(n=1, **kw):
        users = ["usr_%s" % uuid.uuid4().hex[:12] for _ in range(n)]
        for u in users:
            publish(joined_event(u, **kw))
        wait_for(lambda: db.members.count_documents({"_id": {"$in": users}, "status": "active"}) == n)
        return users
    return make


@pytest.fixture
def merchant(call):
    return call("create_merchant", ADMIN, merchant_body(name="蜀味面馆"))


@pytest.fixture
def campaign(call, merchant):
    """``campaign(**overrides)``: a live campaign of ``merchant``."""
    def make(actor=ADMIN, **kw):
        return call("create_campaign", actor, campaign_body(kw.pop("merchant_id", merchant["id"]), **kw))
    return make


def outbox_events(db, event):
    return [d["envelope"] for d in db.outbox.find({"type": event})]


# ---- merchants and campaigns ----------------------------------------------------------------------------------
def test_merchant_and_campaign_are_created_and_published(call, db, campaign, merchant):
    assert merchant["id"].startswith("mer_") and merchant["region_code"] == "510104"
    c = campaign(quota=7, eligibility={"region_codes": ["510100"], "occupation_groups": ["courier"]})
    assert c["remaining"] == 7 and c["status"] == "live" and c["eligibility"]["region_codes"] == ["5101"]
    assert call("get_campaign", None, c["id"])["id"] == c["id"]
    published = outbox_events(db, "campaign_published")
    assert [e["data"]["campaign_id"] for e in published] == [c["id"]]
    assert published[0]["data"]["quota"] == 7


def test_bad_campaigns_are_refused_and_nothing_is_written(call, fails, db, campaign, merchant):
    soon = now() + datetime.timedelta(hours=1)
    cases = [
        dict(quota=0), dict(quota=-3), dict(per_member_limit=0), dict(face_value_cents=10.5),
        dict(face_value_cents="1000"), dict(min_spend_cents=True), dict(quota=2.0),
        dict(claim_starts_at=iso(soon), claim_ends_at=iso(soon)),  # empty window
        dict(claim_starts_at=iso(soon + datetime.timedelta(hours=1)), claim_ends_at=iso(soon)),  # wrong order
        dict(claim_ends_at=iso(soon + datetime.timedelta(days=30))),  # after redeem_ends_at
        dict(claim_starts_at=iso(now() - datetime.timedelta(days=2)),
             claim_ends_at=iso(now() - datetime.timedelta(days=1))),  # already over
        dict(claim_ends_at="2030-01-01T10:00:00"),  # no zone
        dict(eligibility={"region_codes": ["5199"]}), dict(eligibility={"region_codes": ["110101"]}),
        dict(eligibility={"occupation_groups": ["astronaut"]}), dict(eligibility={"colour": ["red"]}),
        dict(surprise=1),
    ]
    for overrides in cases:
        with pytest.raises(AppError) as exc:
            campaign(**overrides)
        assert (exc.value.status, exc.value.code) == (400, "VALIDATION_ERROR"), overrides
    with pytest.raises(AppError) as exc:
        campaign(merchant_id="mer_nope")
    assert (exc.value.status, exc.value.code) == (404, "NOT_FOUND")
    with pytest.raises(AppError) as exc:  # a Chengdu admin cannot reach Mianyang
        campaign(actor=CHENGDU_ADMIN, eligibility={"region_codes": ["5107"]})
    assert (exc.value.status, exc.value.code) == (403, "OUT_OF_SCOPE")
    fails(403, "FORBIDDEN", "create_campaign", member_actor("usr_x"), {})
    assert db.campaigns.count_documents({}) == 0 and db.outbox.count_documents({"type": "campaign_published"}) == 0


def test_bad_merchants_are_refused(call, fails, db, merchant):
    fails(400, "VALIDATION_ERROR", "create_merchant", ADMIN, {"name": "x店", "uscc": "91512081MA62K0260F",
                                                              "region_code": "510104"})
    fails(400, "VALIDATION_ERROR", "create_merchant", ADMIN, {"name": "x店", "uscc": new_uscc(),
                                                              "region_code": "5101"})
    fails(403, "OUT_OF_SCOPE", "create_merchant", JINJIANG_ADMIN, {"name": "绵阳店", "uscc": new_uscc(),
                                                                   "region_code": "510703"})
    fails(409, "MERCHANT_EXISTS", "create_merchant", ADMIN, {"name": "again", "uscc": merchant["uscc"],
                                                             "region_code": "510104"})
    assert db.merchants.count_documents({}) == 1


def test_idempotency_key_on_create_returns_the_first_result(call, fails, db):
    body = {"name": "火锅店", "uscc": new_uscc(), "region_code": "510104"}
    first = call("create_merchant", ADMIN, body, "key-1")
    assert call("create_merchant", ADMIN, body, "key-1") == first
    fails(422, "IDEMPOTENCY_KEY_REUSED", "create_merchant", ADMIN, dict(body, name="另一家"), "key-1")
    assert db.merchants.count_documents({}) == 1


def test_campaign_list_filters_by_status_and_region(call, campaign):
    live = campaign(eligibility={"region_codes": ["510104"]})
    later = campaign(claim_starts_at=iso(now() + datetime.timedelta(hours=1)),
                     eligibility={"region_codes": ["5107"]})
    everywhere = campaign()
    ids_of = lambda page: [c["id"] for c in page["items"]]  # noqa: E731
    assert set(ids_of(call("list_campaigns", None, {"status": "live"}))) == {live["id"], everywhere["id"]}
    assert ids_of(call("list_campaigns", None, {"status": "upcoming"})) == [later["id"]]
    assert set(ids_of(call("list_campaigns", None, {"region_code": "5101"}))) == {live["id"], everywhere["id"]}
    assert set(ids_of(call("list_campaigns", None, {"region_code": "510703"}))) == {later["id"], everywhere["id"]}
    first = call("list_campaigns", None, {"limit": 2})
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = call("list_campaigns", None, {"limit": 2, "cursor": first["next_cursor"]})
    assert ids_of(rest) == [live["id"]] and rest["next_cursor"] is None
    with pytest.raises(AppError) as exc:
        call("list_campaigns", None, {"cursor": "%%%"})
    assert exc.value.code == "VALIDATION_ERROR"


# ---- claims ---------------------------------------------------------------------------------------------------
def test_claim_issues_a_coupon_and_announces_it_without_the_code(call, db, campaign, members):
    c = campaign(quota=3, per_member_limit=2)
    (user,) = members(1)
    coupon = call("claim", member_actor(user), c["id"])
    assert coupon["status"] == "unused" and coupon["campaign_id"] == c["id"] and len(coupon["code"]) == 20
    assert coupon["expires_at"] == c["redeem_ends_at"]
    claimed = outbox_events(db, "coupon_claimed")
    assert len(claimed) == 1 and claimed[0]["data"]["user_id"] == user
    assert coupon["code"] not in str(claimed[0])
    assert call("get_campaign", None, c["id"])["remaining"] == 2
    mine = call("my_coupons", member_actor(user), {})
    assert [x["code"] for x in mine["items"]] == [coupon["code"]]


def test_claim_refusals_in_api_order_change_no_count(call, fails, db, campaign, members, publish):
    (user, other) = members(2)
    (far,) = members(1, region="510703")
    (driver,) = members(1, group="truck_driver")
    c = campaign(quota=2, eligibility={"region_codes": ["5101"], "occupation_groups": ["courier"]})
    fails(403, "NOT_ELIGIBLE", "claim", member_actor("usr_never_joined"), c["id"])
    fails(403, "NOT_ELIGIBLE", "claim", member_actor(far), c["id"])
    fails(403, "NOT_ELIGIBLE", "claim", member_actor(driver), c["id"])
    fails(404, "NOT_FOUND", "claim", member_actor(user), "cmp_nope")
    later = campaign(claim_starts_at=iso(now() + datetime.timedelta(hours=1)))
    fails(409, "NOT_OPEN", "claim", member_actor(user), later["id"])
    call("claim", member_actor(user), c["id"])
    fails(409, "LIMIT_REACHED", "claim", member_actor(user), c["id"])
    publish(left_event(other))
    wait_for(lambda: db.members.find_one({"_id": other, "status": "left"}))
    fails(403, "NOT_ELIGIBLE", "claim", member_actor(other), c["id"])
    fails(403, "FORBIDDEN", "claim", ADMIN, c["id"])
    assert db.coupons.count_documents({"campaign_id": c["id"]}) == 1
    assert call("get_campaign", None, c["id"])["remaining"] == 1
    assert call("get_campaign", None, later["id"])["remaining"] == 5


def test_sold_out_is_refused_and_announced_once(svc, call, fails, db, campaign, members):
    c = campaign(quota=3)
    users = members(5)
    for u in users[:3]:
        call("claim", member_actor(u), c["id"])
    fails(409, "SOLD_OUT", "claim", member_actor(users[3]), c["id"])
    get_extension(svc, ProcessMemory).value.sold_out.clear()  # and without this process's memory of it
    fails(409, "SOLD_OUT", "claim", member_actor(users[4]), c["id"])
    assert db.coupons.count_documents({"campaign_id": c["id"]}) == 3
    sold = outbox_events(db, "campaign_sold_out")
    assert [e["data"] for e in sold] == [{"campaign_id": c["id"], "quota": 3}]
    assert call("get_campaign", None, c["id"])["remaining"] == 0


def test_idempotency_key_on_claim_returns_the_same_coupon(call, fails, db, campaign, members):
    c = campaign(quota=5, per_member_limit=3)
    other = campaign(quota=5)
    (user,) = members(1)
    first = call("claim", member_actor(user), c["id"], "grab-1")
    again = call("claim", member_actor(user), c["id"], "grab-1")
    assert again == first
    fails(422, "IDEMPOTENCY_KEY_REUSED", "claim", member_actor(user), other["id"], "grab-1")
    assert db.coupons.count_documents({"user_id": user}) == 1
    assert call("get_campaign", None, c["id"])["remaining"] == 4


def test_one_idempotency_key_sent_five_times_at_once_claims_once(config, db, campaign, members):
    from nameko.standalone.rpc import ClusterRpcProxy
    c = campaign(quota=5, per_member_limit=1)
    (user,) = members(1)
    answers = []

    def claim():
        with ClusterRpcProxy(config) as rpc:
            answers.append(rpc.benefits.claim(member_actor(user), c["id"], "tap-tap-tap"))
    pool = eventlet.GreenPool(5)
    for _ in range(5):
        pool.spawn(claim)
    pool.waitall()
    assert len(answers) == 5 and len({a["code"] for a in answers}) == 1
    assert db.coupons.count_documents({"user_id": user}) == 1


def test_concurrent_claims_never_exceed_quota_or_limit(svc, config, db, campaign, members, container_factory):
    """Two containers (two replicas), 40 members each trying 3 times at once, quota 25, limit 2."""
    from nameko.standalone.rpc import ClusterRpcProxy
    second = container_factory(BenefitsService, config)
    second.start()
    c = campaign(quota=25, per_member_limit=2)
    users = members(40)
    outcomes = []

    def grab(user):
        with ClusterRpcProxy(config) as rpc:
            for _ in range(3):
                try:
                    rpc.benefits.claim(member_actor(user), c["id"])
                    outcomes.append("ok")
                except AppError as exc:
                    outcomes.append(exc.code)
    pool = eventlet.GreenPool(40)
    for u in users:
        pool.spawn(grab, u)
    pool.waitall()
    assert outcomes.count("ok") == 25
    assert set(outcomes) <= {"ok", "SOLD_OUT", "LIMIT_REACHED"}
    assert db.coupons.count_documents({"campaign_id": c["id"]}) == 25
    per_user = {}
    for cp in db.coupons.find({"campaign_id": c["id"]}):
        per_user[cp["user_id"]] = per_user.get(cp["user_id"], 0) + 1
    assert max(per_user.values()) <= 2
    assert sum(b["left"] for b in db.stock.find({"campaign_id": c["id"]})) == 0
    assert sum(t["taken"] for t in db.stock_taken.find({"campaign_id": c["id"]})) == 25  # what remaining reads
    assert sum(sum(m.get("claims", {}).values()) for m in db.members.find({"_id": {"$in": users}})) == 25
    assert len(outbox_events(db, "campaign_sold_out")) == 1


def test_a_claim_failing_half_way_leaves_the_quota_as_it_was(call, db, campaign, members, monkeypatch):
    c = campaign(quota=2)
    a, b, d = members(3)
    real = store.take_stock

    def broken(*args, **kwargs):
        real(*args, **kwargs)  # the stock is taken, then the store falls over before the commit
        raise RuntimeError("store fell over")
    monkeypatch.setattr(store, "take_stock", broken)
    with pytest.raises(Exception):
        call("claim", member_actor(a), c["id"])
    monkeypatch.setattr(store, "take_stock", real)
    assert db.coupons.count_documents({"campaign_id": c["id"]}) == 0
    assert not db.members.find_one({"_id": a}).get("claims")
    assert db.outbox.count_documents({"type": "coupon_claimed"}) == 0
    assert call("get_campaign", None, c["id"])["remaining"] == 2
    for u in (a, b):
        call("claim", member_actor(u), c["id"])
    with pytest.raises(AppError) as exc:
        call("claim", member_actor(d), c["id"])
    assert exc.value.code == "SOLD_OUT"
    assert db.coupons.count_documents({"campaign_id": c["id"]}) == 2


def test_the_quota_is_spread_over_stock_buckets(call, db, campaign):
    c = campaign(quota=100)
    buckets = list(db.stock.find({"campaign_id": c["id"]}))
    assert len(buckets) == 64 and sum(b["left"] for b in buckets) == 100
    small = campaign(quota=3)
    assert db.stock.count_documents({"campaign_id": small["id"]}) == 3


def test_a_bucket_emptied_by_another_replica_teaches_this_one_every_bucket_at_once(svc, call, db, campaign, members,
                                                                                      monkeypatch):
    """Another replica has emptied 63 of the 64 buckets this process still thinks full. The claim that finds the
    first of them empty reads every bucket's level once and takes from the one left: two guarded takes in all,
    not one per emptied bucket."""
    c = campaign(quota=64)
    (u,) = members(1)
    ids = sorted(b["_id"] for b in db.stock.find({"campaign_id": c["id"]}))
    last = ids.pop()
    db.stock.update_many({"_id": {"$in": ids}}, {"$set": {"left": 0}})  # the other replica's claims
    pool = get_extension(svc, ProcessMemory).value.pool(store.campaign(db, c["id"]))
    pool.free = [63] + list(range(63))  # the first bucket leased is one the other replica emptied
    taken = []
    real = store.take_stock

    def counting(*args):
        taken.append(args[2])
        return real(*args)
    monkeypatch.setattr(store, "take_stock", counting)
    coupon = call("claim", member_actor(u), c["id"])
    assert coupon["campaign_id"] == c["id"]
    assert taken == [62, 63] and pool.empty == set(range(64))  # 63 was emptied by this claim
    assert db.stock.find_one({"_id": last})["left"] == 0


# ---- welcome coupons ------------------------------------------------------------------------------------------
def test_welcome_coupon_once_despite_redelivery_and_a_second_replica(svc, config, container_factory, db, campaign,
                                                                      publish):
    second = container_factory(BenefitsService, config)
    second.start()
    welcome = campaign(welcome=True, quota=10, eligibility={"region_codes": ["5101"]})
    campaign(welcome=True, quota=10, eligibility={"region_codes": ["5107"]})  # not for Chengdu members
    campaign(welcome=False)
    user = "usr_%s" % uuid.uuid4().hex[:12]
    env = joined_event(user)
    for _ in range(3):  # the same event delivered three times
        publish(env)
    publish(joined_event(user))  # and another member_joined for the same person (a rejoin)
    wait_for(lambda: db.coupons.find_one({"user_id": user}))
    wait_for(lambda: db.processed_events.count_documents({}) == 2)
    coupons = list(db.coupons.find({"user_id": user}))
    assert len(coupons) == 1 and coupons[0]["campaign_id"] == welcome["id"] and coupons[0]["welcome"] is True
    claimed = outbox_events(db, "coupon_claimed")
    assert len(claimed) == 1 and claimed[0]["data"]["welcome"] is True
    assert db.welcome_grants.count_documents({"user_id": user}) == 1


def test_welcome_campaigns_cannot_be_claimed_by_hand(fails, campaign, members):
    welcome = campaign(welcome=True)
    (user,) = members(1)
    fails(403, "NOT_ELIGIBLE", "claim", member_actor(user), welcome["id"])


def test_no_welcome_coupon_from_a_sold_out_campaign_and_the_member_is_still_projected(db, campaign, members,
                                                                                     publish):
    welcome = campaign(welcome=True, quota=2)
    first = members(2)
    wait_for(lambda: db.coupons.count_documents({"campaign_id": welcome["id"]}) == 2)
    (late,) = members(1)
    assert db.processed_events.count_documents({}) == 3
    assert db.coupons.count_documents({"campaign_id": welcome["id"]}) == 2
    assert not db.coupons.find_one({"user_id": late})
    assert {cp["user_id"] for cp in db.coupons.find({"campaign_id": welcome["id"]})} == set(first)
    assert len(outbox_events(db, "campaign_sold_out")) == 1


# ---- redemption and expiry ------------------------------------------------------------------------------------
def test_redeem_by_the_campaign_merchant_once(call, fails, db, campaign, members, merchant):
    c = campaign(quota=3)
    (user,) = members(1)
    coupon = call("claim", member_actor(user), c["id"])
    fails(403, "FORBIDDEN", "redeem", merchant_actor("mer_other"), coupon["code"])
    fails(404, "NOT_FOUND", "redeem", merchant_actor(merchant["id"]), "A" * 20)
    fails(404, "NOT_FOUND", "redeem", merchant_actor(merchant["id"]), "not-a-code")
    fails(403, "FORBIDDEN", "redeem", member_actor(user), coupon["code"])
    done = call("redeem", merchant_actor(merchant["id"]), coupon["code"].lower())
    assert done["status"] == "redeemed" and done["coupon_id"] == coupon["id"]
    fails(409, "ALREADY_REDEEMED", "redeem", merchant_actor(merchant["id"]), coupon["code"])
    redeemed = outbox_events(db, "coupon_redeemed")
    assert len(redeemed) == 1 and coupon["code"] not in str(redeemed[0])
    stats = call("stats", ADMIN, {})
    row = [r for r in stats["items"] if r["campaign_id"] == c["id"]][0]
    assert (row["claimed"], row["redeemed"], row["redeemed_value_cents"]) == (1, 1, 1000)


def test_concurrent_redemptions_of_one_code_redeem_it_once(config, db, campaign, members, merchant, call):
    from nameko.standalone.rpc import ClusterRpcProxy
    c = campaign(quota=3)
    (user,) = members(1)
    coupon = call("claim", member_actor(user), c["id"])
    outcomes = []

    def redeem():
        with ClusterRpcProxy(config) as rpc:
            try:
                rpc.benefits.redeem(merchant_actor(merchant["id"]), coupon["code"])
                outcomes.append("ok")
            except AppError as exc:
                outcomes.append(exc.code)
    pool = eventlet.GreenPool(10)
    for _ in range(10):
        pool.spawn(redeem)
    pool.waitall()
    assert outcomes.count("ok") == 1 and outcomes.count("ALREADY_REDEEMED") == 9
    assert len(outbox_events(db, "coupon_redeemed")) == 1
    assert sum(d["redeemed"] for d in db.redemptions.find({"campaign_id": c["id"]})) == 1


def test_unused_coupons_expire_after_the_deadline(call, fails, db, campaign, members, merchant):
    c = campaign(quota=5, per_member_limit=2)
    a, b = members(2)
    kept = call("claim", member_actor(a), c["id"])
    used = call("claim", member_actor(b), c["id"])
    call("redeem", merchant_actor(merchant["id"]), used["code"])
    # the deadline passes (the store's clock is moved, not the test's)
    past = now() - datetime.timedelta(seconds=1)
    db.campaigns.update_one({"_id": c["id"]}, {"$set": {"redeem_ends_at": past, "claim_ends_at": past}})
    db.coupons.update_many({"campaign_id": c["id"]}, {"$set": {"expires_at": past}})
    fails(410, "EXPIRED", "redeem", merchant_actor(merchant["id"]), kept["code"])
    assert call("my_coupons", member_actor(a), {})["items"][0]["status"] == "expired"
    call("maintain")
    assert db.coupons.find_one({"_id": kept["id"]})["status"] == "expired"
    assert db.coupons.find_one({"_id": used["id"]})["status"] == "redeemed"
    call("maintain")
    assert db.coupons.count_documents({"campaign_id": c["id"], "status": "expired"}) == 1
    fails(410, "EXPIRED", "redeem", merchant_actor(merchant["id"]), kept["code"])
    assert call("my_coupons", member_actor(a), {"status": "expired"})["items"][0]["id"] == kept["id"]
    assert call("my_coupons", member_actor(a), {"status": "unused"})["items"] == []


# ---- statistics -----------------------------------------------------------------------------------------------
def test_stats_only_cover_campaigns_in_scope(call, fails, campaign):
    province = campaign()
    chengdu = campaign(actor=CHENGDU_ADMIN)
    jinjiang = campaign(eligibility={"region_codes": ["510104"]})
    ids_of = lambda actor: {r["campaign_id"] for r in call("stats", actor, {})["items"]}  # noqa: E731
    assert ids_of(ADMIN) == {province["id"], chengdu["id"], jinjiang["id"]}
    assert ids_of(CHENGDU_ADMIN) == {chengdu["id"], jinjiang["id"]}
    assert ids_of(JINJIANG_ADMIN) == {jinjiang["id"]}
    assert ids_of(dict(ADMIN, scope="5107")) == set()
    fails(403, "FORBIDDEN", "stats", member_actor("usr_x"), {})


# ---- group commit: claims decided and written in batches --------------------------------------------------------
BATCH_WINDOW = 1.5  # wide enough that calls sent together land in one batch on a machine at load average 25


def claims_batcher(container, window):
    """The container's group commit of claims, with a window wide enough that concurrent calls share one batch."""
    from unionhub_kit.batching import Batcher
    group = next(d for d in container.extensions if isinstance(d, Batcher)).group
    group.window = window
    return group


def claim_at_once(config, calls):
    """``calls``: [(user, campaign id, key or None)], all sent at once; returns the answers in order (a coupon or
    the error code)."""
    from nameko.standalone.rpc import ClusterRpcProxy
    answers = [None] * len(calls)

    def one(n, user, campaign_id, key):
        with ClusterRpcProxy(config) as rpc:
            try:
                answers[n] = rpc.benefits.claim(member_actor(user), campaign_id, key)
            except AppError as exc:
                answers[n] = exc.code
    pool = eventlet.GreenPool(len(calls))
    for n, call in enumerate(calls):
        pool.spawn(one, n, *call)
    pool.waitall()
    return answers


def test_a_batch_answers_the_same_member_twice_by_the_limit(svc, config, db, campaign, members):
    group = claims_batcher(svc, BATCH_WINDOW)
    one, two = campaign(quota=10, per_member_limit=1), campaign(quota=10, per_member_limit=2)
    (user,) = members(1)
    before = group.batches
    answers = claim_at_once(config, [(user, one["id"], None)] * 2)
    assert sorted(a if isinstance(a, str) else "ok" for a in answers) == ["LIMIT_REACHED", "ok"]
    answers = claim_at_once(config, [(user, two["id"], None)] * 3)
    assert sorted(a if isinstance(a, str) else "ok" for a in answers) == ["LIMIT_REACHED", "ok", "ok"]
    assert group.batches - before == 2  # each set of calls was one batch
    assert db.coupons.count_documents({"user_id": user}) == 3
    assert db.members.find_one({"_id": user})["claims"] == {one["id"]: 1, two["id"]: 2}


def test_a_batch_bigger_than_the_stock_issues_what_is_left_and_the_rest_are_sold_out(svc, config, db, campaign,
                                                                                        members):
    group = claims_batcher(svc, BATCH_WINDOW)
    c = campaign(quota=3, per_member_limit=1)
    users = members(7)
    (far,) = members(1, region="510703")
    c_far = campaign(quota=3, eligibility={"region_codes": ["5101"]})
    before = group.batches
    answers = claim_at_once(config, [(u, c["id"], None) for u in users])
    assert group.batches - before == 1
    assert sorted(a if isinstance(a, str) else "ok" for a in answers) == ["SOLD_OUT"] * 4 + ["ok"] * 3
    assert db.coupons.count_documents({"campaign_id": c["id"]}) == 3
    assert sum(b["left"] for b in db.stock.find({"campaign_id": c["id"]})) == 0
    assert len(outbox_events(db, "coupon_claimed")) == 3 and len(outbox_events(db, "campaign_sold_out")) == 1
    # refusals keep the API's order inside a batch: not eligible before sold out
    for u in users[:2]:
        claim_at_once(config, [(u, c_far["id"], None)])
    answers = claim_at_once(config, [(far, c_far["id"], None), (users[2], c_far["id"], None),
                                     (users[3], c_far["id"], None)])
    # which of the two eligible members arrives first inside the batch is up to the broker: one gets the last
    # coupon, the other SOLD_OUT; the ineligible one is NOT_ELIGIBLE (not SOLD_OUT) whatever its place
    assert answers[0] == "NOT_ELIGIBLE"
    assert sorted(a if isinstance(a, str) else "ok" for a in answers[1:]) == ["SOLD_OUT", "ok"]


def test_an_idempotency_key_twice_in_one_batch_and_a_replay_beside_new_claims(svc, config, db, campaign, members):
    group = claims_batcher(svc, BATCH_WINDOW)
    c = campaign(quota=10, per_member_limit=3)
    other = campaign(quota=10)
    a, b = members(2)
    before = group.batches
    answers = claim_at_once(config, [(a, c["id"], "k1"), (a, c["id"], "k1"), (b, c["id"], None)])
    assert group.batches - before == 1
    assert answers[0] == answers[1] and answers[0]["code"] != answers[2]["code"]
    k1 = answers[0]
    # the stored key replays inside a later batch that also issues new coupons; the same key on another campaign
    # is refused; the same key string under another member is that member's own
    answers = claim_at_once(config, [(a, c["id"], "k1"), (a, c["id"], "k2"), (a, other["id"], "k1"),
                                     (b, c["id"], "k1")])
    assert answers[0] == k1 and answers[1]["code"] != k1["code"]
    assert answers[2] == "IDEMPOTENCY_KEY_REUSED"
    assert answers[3]["code"] not in (answers[0]["code"], answers[1]["code"])
    assert db.coupons.count_documents({"user_id": a}) == 2 and db.coupons.count_documents({"user_id": b}) == 2
    assert db.members.find_one({"_id": a})["claims"] == {c["id"]: 2}
    assert db.idempotency.count_documents({}) == 3  # k1 and k2 of a, k1 of b


def test_a_batch_aborted_by_a_concurrent_change_is_decided_again(svc, config, db, campaign, members, monkeypatch):
    """A member who claims through another replica between this batch's read and its write: the guarded count
    refuses the whole batch's transaction, the batch is decided again and that member gets LIMIT_REACHED."""
    c = campaign(quota=10, per_member_limit=1)
    a, b = members(2)
    real, raced = store.members, []

    def read_then_race(db_, user_ids):
        found = real(db_, user_ids)
        if not raced:
            raced.append(1)
            db_.members.update_one({"_id": a}, {"$set": {"claims.%s" % c["id"]: 1}})  # the other replica's claim
        return found
    monkeypatch.setattr(store, "members", read_then_race)
    claims_batcher(svc, BATCH_WINDOW)
    answers = claim_at_once(config, [(a, c["id"], None), (b, c["id"], None)])
    assert answers[0] == "LIMIT_REACHED" and not isinstance(answers[1], str)
    assert db.coupons.count_documents({"campaign_id": c["id"]}) == 1
    assert sum(bk["left"] for bk in db.stock.find({"campaign_id": c["id"]})) == 9


def test_claim_many_answers_each_claim_of_a_gateway_batch_in_its_order(svc, call, fails, db, campaign, members):
    """The gateway's batch: one call, one answer per claim (a coupon, or the serialized client error that refuses
    that claim alone), in the order sent; the batch is decided and written together."""
    from nameko.exceptions import deserialize
    c = campaign(quota=2, per_member_limit=1)
    a, b, late = members(3)
    group = claims_batcher(svc, BATCH_WINDOW)
    before = group.batches

    def item(actor, key=None, rid=None):
        return {"actor": actor, "idempotency_key": key, "request_id": rid}
    answers = call("claim_many", c["id"], [item(member_actor(a), "k-a", "req-a"), item(ADMIN),
                                           item(member_actor("usr_never_joined")), item(member_actor(a)),
                                           item(member_actor(b), None, "req-b"), item(member_actor(late))])
    assert group.batches - before == 1
    errors = [deserialize(x["error"]) if "error" in x else None for x in answers]
    assert [(e.status, e.code) if e else None for e in errors] == [
        None, (403, "FORBIDDEN"), (403, "NOT_ELIGIBLE"), (409, "LIMIT_REACHED"), None, (409, "SOLD_OUT")]
    assert all(isinstance(e, AppError) for e in errors if e)
    coupons = [x["result"] for x in answers if "result" in x]
    assert [x["campaign_id"] for x in coupons] == [c["id"]] * 2 and coupons[0]["code"] != coupons[1]["code"]
    claimed = {e["data"]["user_id"]: e["requestid"] for e in outbox_events(db, "coupon_claimed")}
    assert claimed == {a: "req-a", b: "req-b"}  # each event carries its own request's id
    # the key replays in a later batch; the whole quota went to a and b
    again = call("claim_many", c["id"], [item(member_actor(a), "k-a")])
    assert again == [{"result": coupons[0]}]
    assert db.coupons.count_documents({"campaign_id": c["id"]}) == 2


def test_claim_many_refuses_bad_arguments_whole_and_writes_nothing(call, fails, db, campaign, members):
    c = campaign(quota=5)
    (user,) = members(1)
    ok = {"actor": member_actor(user), "idempotency_key": None, "request_id": None}
    fails(404, "NOT_FOUND", "claim_many", "cmp_nope", [ok])
    for campaign_id, claims in [(c["id"], []), (c["id"], [ok] * 65), (c["id"], "not a list"), (None, [ok]),
                                (c["id"], [dict(ok, actor={"role": "member"})]),
                                (c["id"], [dict(ok, idempotency_key="bad key!")]),
                                (c["id"], [dict(ok, extra=1)]), ("a" * 65, [ok])]:
        fails(400, "VALIDATION_ERROR", "claim_many", campaign_id, claims)
    assert db.coupons.count_documents({"campaign_id": c["id"]}) == 0
    assert call("get_campaign", None, c["id"])["remaining"] == 5


# ---- campaign affinity (unionhub_kit.affinity) --------------------------------------------------------------------
class AffinityCaller:
    """What the gateway's ``claim_batch`` does: ``claim_many`` with the campaign as affinity key, through the kit's
    timed proxy."""
    name = "affinity_caller"
    benefits = Rpc("benefits")

    @dummy
    def claim_many(self, campaign_id, claims):
        return with_affinity(self.benefits, campaign_id).claim_many(campaign_id, claims)


@pytest.fixture
def caller(container_factory, config):
    container = container_factory(AffinityCaller, config)
    container.start()

    def claim_many(campaign_id, users):
        with entrypoint_hook(container, "claim_many") as fn:
            return fn(campaign_id, [{"actor": member_actor(u), "idempotency_key": None, "request_id": None}
                                    for u in users])
    return claim_many


def served(containers):
    """How many claims each container's group commit has decided so far."""
    from unionhub_kit.batching import Batcher
    return [next(d for d in c.extensions if isinstance(d, Batcher)).group.items for c in containers]


def affinity_queues(rabbit_manager, config):
    """The queues bound to benefits' affinity exchange, or None when the exchange does not exist."""
    from requests import HTTPError
    name = affinity.exchange_name("benefits")
    try:
        rabbit_manager._get("exchanges", config["vhost"], name)
    except HTTPError:
        return None
    return sorted(b["destination"] for b in rabbit_manager._get("exchanges", config["vhost"], name, "bindings",
                                                                 "source"))


def test_each_campaign_is_served_by_one_replica_and_campaigns_spread_over_both(svc, config, container_factory,
                                                                                 campaign, members, caller,
                                                                                 rabbit_manager):
    """Two replicas, 16 campaigns, 3 ``claim_many`` calls each through the affinity path: every call of a campaign
    is decided by the same replica, and both replicas get campaigns. The consistent hash splits campaigns about
    evenly (one bucket per replica), so all 16 on one replica has probability 2 * (1/2)**16 = 1 in 32,768; on the
    shared queue (no affinity) the replicas take turns, and 16 campaigns of 3 calls would never all stay put."""
    second = container_factory(BenefitsService, config)
    second.start()
    replicas = [svc, second]
    queues = affinity_queues(rabbit_manager, config)
    assert len(queues) == 2 and all(q.startswith("rpc-benefits-affinity-") for q in queues), queues
    (user,) = members(1)
    campaigns = [campaign(quota=10, per_member_limit=3)["id"] for _ in range(16)]
    by_campaign = {}
    for cid in campaigns:
        for _ in range(3):
            before = served(replicas)
            (answer,) = caller(cid, [user])
            assert "result" in answer, answer
            after = served(replicas)
            by_campaign.setdefault(cid, set()).update(n for n in range(2) if after[n] > before[n])
    assert all(len(who) == 1 for who in by_campaign.values()), by_campaign
    assert {next(iter(who)) for who in by_campaign.values()} == {0, 1}, by_campaign


def test_without_an_affinity_queue_calls_fall_through_to_the_shared_queue(config, container_factory, members, caller,
                                                                          rabbit_manager):
    """The exchange exists (the caller declared it) but no replica is bound to it, because the one replica serving
    has ``RPC_AFFINITY`` off, or because the only bound replica stopped: the alternate exchange hands the calls to
    the shared queue, and they are answered."""
    off = container_factory(BenefitsService, dict(config, RPC_AFFINITY=False))
    off.start()
    with entrypoint_hook(off, "create_merchant") as fn:
        mer = fn(ADMIN, merchant_body(name="蜀味面馆"))
    with entrypoint_hook(off, "create_campaign") as fn:
        cid = fn(ADMIN, campaign_body(mer["id"], quota=10, per_member_limit=5))["id"]
    (user,) = members(1)
    assert caller(cid, [user])[0]["result"]["campaign_id"] == cid
    assert affinity_queues(rabbit_manager, config) == []  # declared by the caller, nobody bound
    assert served([off]) == [1]

    on = container_factory(BenefitsService, config)  # a replica with affinity: every call goes to it
    on.start()
    assert len(affinity_queues(rabbit_manager, config)) == 1
    for _ in range(2):
        assert "result" in caller(cid, [user])[0]
    assert served([off, on]) == [1, 2]

    on.stop()  # its queue and binding go with it: the calls fall through again
    assert affinity_queues(rabbit_manager, config) == []
    for _ in range(2):
        assert "result" in caller(cid, [user])[0]
    assert served([off]) == [3]


@pytest.fixture
def no_plugin(monkeypatch):
    """A broker without the consistent-hash plugin: the exchange type is one no broker knows (the broker answers
    the declare as it does without the plugin, closing the connection with COMMAND_INVALID)."""
    monkeypatch.setattr(affinity, "EXCHANGE_TYPE", "x-unionhub-no-such-type")


def test_without_the_broker_plugin_the_service_starts_and_serves_from_the_shared_queue(no_plugin, svc, campaign,
                                                                                          members, caller, caplog,
                                                                                          rabbit_manager, config):
    from nameko.testing.utils import get_extension
    from unionhub_kit.rpc import _AffinityRpcConsumer
    assert get_extension(svc, _AffinityRpcConsumer).serving is False
    assert any("RPC affinity off" in r.getMessage() for r in caplog.get_records("setup"))
    c = campaign(quota=10, per_member_limit=5)
    (user,) = members(1)
    for _ in range(2):
        assert caller(c["id"], [user])[0]["result"]["campaign_id"] == c["id"]
    assert affinity_queues(rabbit_manager, config) is None  # neither side could declare it
    assert served([svc]) == [2]

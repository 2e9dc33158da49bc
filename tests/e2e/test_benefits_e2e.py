"""Benefits end to end through the gateway on the real stack: the full join -> welcome coupon -> claim -> redeem
flow, every bad input of issue #3 with its code and no count changed, staff scopes, expiry, and claims at once on a
small quota with two benefits replicas running.

Most members here are projected into benefits by publishing ``member_joined`` on the stack's broker (tokens minted
with the stack's key), which is what membership does; ``test_join_welcome_claim_redeem_flow`` goes through
membership for real.
"""
import datetime
import threading
import time
import uuid

from nameko.standalone.events import event_dispatcher

from support import builders, client
from support.client import get, post, problem, project
from support.stack import wait_for
from unionhub_kit import clock, events, tokens

ADMIN = tokens.issue("acc_e2e_admin", "union_admin", scope="51", ttl_seconds=6 * 3600)  # minted for the whole run


def iso(dt):
    return events.rfc3339(dt)


def now():
    return clock.now()


CHENGDU = {"region_codes": ["5101"], "occupation_groups": [], "union_ids": []}


def campaign_body(merchant_id, **kw):
    """support.builders' campaign, open in Chengdu (5101) unless told otherwise."""
    return builders.campaign_body(merchant_id, **dict({"eligibility": CHENGDU}, **kw))


def new_merchant(stack, admin=ADMIN, region="510104"):
    return client.new_merchant(stack, admin, region)


def new_campaign(stack, merchant_id, admin=ADMIN, **kw):
    return client.new_campaign(stack, merchant_id, admin, **dict({"eligibility": CHENGDU}, **kw))


def remaining(stack, campaign_id):
    r = get(stack, "/api/v1/campaigns/%s" % campaign_id)
    assert r.status_code == 200, r.text
    return r.json()["remaining"]


def merchant_token(merchant_id):
    return tokens.issue("acc_%s" % merchant_id, "merchant", merchant_id=merchant_id)


# ---- the whole flow -------------------------------------------------------------------------------------------
def test_join_welcome_claim_redeem_flow(stack):
    admin = client.admin_token(stack)
    merchant = new_merchant(stack, admin)
    welcome = new_campaign(stack, merchant["id"], admin, title="入会礼 10元", welcome=True, quota=100)
    regular = new_campaign(stack, merchant["id"], admin, title="午餐券", quota=10, per_member_limit=2)
    listed = get(stack, "/api/v1/campaigns", params={"status": "live", "region_code": "510104"}).json()["items"]
    assert {welcome["id"], regular["id"]} <= {c["id"] for c in listed}

    token, member, _ = client.new_member(stack)  # OTP login and one-click join through membership
    coupons = wait_for(lambda: get(stack, "/api/v1/members/me/coupons", token).json()["items"], what="welcome coupon")
    assert [(c["campaign_id"], c["welcome"], c["status"]) for c in coupons] == [(welcome["id"], True, "unused")]

    r = post(stack, "/api/v1/campaigns/%s/claims" % regular["id"], token)
    assert r.status_code == 201, r.text
    coupon = r.json()
    assert coupon["status"] == "unused" and coupon["campaign_id"] == regular["id"]
    assert coupon["expires_at"] == regular["redeem_ends_at"] and len(coupon["code"]) == 20
    assert remaining(stack, regular["id"]) == 9

    seller = client.staff_token(stack, admin, "mer-%s" % uuid.uuid4().hex[:8], "merchant",
                                 merchant_id=merchant["id"])
    r = post(stack, "/api/v1/coupons/%s/redeem" % coupon["code"], seller)
    assert r.status_code == 200 and r.json()["status"] == "redeemed", r.text
    problem(post(stack, "/api/v1/coupons/%s/redeem" % coupon["code"], seller), 409, "ALREADY_REDEEMED")
    mine = get(stack, "/api/v1/members/me/coupons", token, {"status": "redeemed"}).json()["items"]
    assert [c["id"] for c in mine] == [coupon["id"]]

    stats = get(stack, "/api/v1/admin/stats/benefits", admin).json()["items"]
    row = [s for s in stats if s["campaign_id"] == regular["id"]][0]
    assert (row["claimed"], row["redeemed"], row["redeemed_value_cents"]) == (1, 1, 1000)

    # notify puts the claim and the redemption in the member's inbox (category benefits)
    def benefit_notices():
        items = get(stack, "/api/v1/members/me/notifications", token).json().get("items", [])
        return [n for n in items if n["category"] == "benefits"]
    wait_for(lambda: len(benefit_notices()) >= 3, what="benefits notices in the inbox")
    assert coupon["code"] not in stack.logs()


# ---- bad input ------------------------------------------------------------------------------------------------
def test_every_bad_campaign_is_a_4xx_and_nothing_is_written(stack):
    merchant = new_merchant(stack)
    campaigns = stack.db("benefits").campaigns
    before = campaigns.count_documents({})
    soon = now() + datetime.timedelta(hours=1)
    for overrides in (dict(quota=0), dict(per_member_limit=0), dict(per_member_limit=-1),
                      dict(face_value_cents=9.99), dict(min_spend_cents="50"),
                      dict(claim_starts_at=iso(soon), claim_ends_at=iso(soon - datetime.timedelta(minutes=1))),
                      dict(claim_ends_at=iso(soon + datetime.timedelta(days=30))),
                      dict(claim_starts_at=iso(now() - datetime.timedelta(days=3)),
                           claim_ends_at=iso(now() - datetime.timedelta(days=2))),
                      dict(eligibility={"region_codes": ["5199"]}),
                      dict(eligibility={"occupation_groups": ["astronaut"]})):
        problem(post(stack, "/api/v1/campaigns", ADMIN, campaign_body(merchant["id"], **overrides)),
                400, "VALIDATION_ERROR")
    problem(post(stack, "/api/v1/campaigns", ADMIN, campaign_body("mer_unknown")), 404, "NOT_FOUND")
    problem(post(stack, "/api/v1/merchants", ADMIN, {"name": "坏码店", "uscc": "91512081MA62K0260F",
                                                     "region_code": "510104"}), 400, "VALIDATION_ERROR")
    assert campaigns.count_documents({}) == before


def test_every_bad_claim_and_redemption_is_a_4xx_and_no_count_changes(stack):
    merchant = new_merchant(stack)
    c = new_campaign(stack, merchant["id"], quota=2, eligibility={"region_codes": ["5101"],
                                                                   "occupation_groups": ["courier"]})
    later = new_campaign(stack, merchant["id"], claim_starts_at=iso(now() + datetime.timedelta(hours=2)))
    (a, ta), (b, tb), (d, td) = client.projected_members(stack, 3)
    (_, far) = client.projected_members(stack, 1, region="510703")[0]
    (_, driver) = client.projected_members(stack, 1, group="truck_driver")[0]
    stranger = tokens.issue("usr_never_joined_%s" % uuid.uuid4().hex[:6], "member")
    claim = "/api/v1/campaigns/%s/claims" % c["id"]

    problem(post(stack, claim, stranger), 403, "NOT_ELIGIBLE")
    problem(post(stack, claim, far), 403, "NOT_ELIGIBLE")
    problem(post(stack, claim, driver), 403, "NOT_ELIGIBLE")
    problem(post(stack, "/api/v1/campaigns/%s/claims" % later["id"], ta), 409, "NOT_OPEN")
    problem(post(stack, "/api/v1/campaigns/cmp_nope/claims", ta), 404, "NOT_FOUND")
    problem(post(stack, claim), 401, "UNAUTHORIZED")
    problem(post(stack, claim, ADMIN), 403, "FORBIDDEN")
    assert remaining(stack, c["id"]) == 2

    first = post(stack, claim, ta)
    assert first.status_code == 201, first.text
    problem(post(stack, claim, ta), 409, "LIMIT_REACHED")
    assert post(stack, claim, tb).status_code == 201
    problem(post(stack, claim, td), 409, "SOLD_OUT")
    assert remaining(stack, c["id"]) == 0
    assert stack.db("benefits").coupons.count_documents({"campaign_id": c["id"]}) == 2

    code = first.json()["code"]
    seller = merchant_token(merchant["id"])
    problem(post(stack, "/api/v1/coupons/%s/redeem" % code, merchant_token("mer_someone_else")), 403, "FORBIDDEN")
    problem(post(stack, "/api/v1/coupons/%s/redeem" % ("B" * 20), seller), 404, "NOT_FOUND")
    problem(post(stack, "/api/v1/coupons/%s/redeem" % code, ta), 403, "FORBIDDEN")
    assert post(stack, "/api/v1/coupons/%s/redeem" % code, seller).status_code == 200
    problem(post(stack, "/api/v1/coupons/%s/redeem" % code, seller), 409, "ALREADY_REDEEMED")
    stats = get(stack, "/api/v1/admin/stats/benefits", ADMIN).json()["items"]
    row = [s for s in stats if s["campaign_id"] == c["id"]][0]
    assert (row["claimed"], row["redeemed"]) == (2, 1)


def test_idempotency_key_returns_the_same_coupon(stack):
    merchant = new_merchant(stack)
    c = new_campaign(stack, merchant["id"], quota=5, per_member_limit=3)
    (_, token), = client.projected_members(stack, 1)
    path = "/api/v1/campaigns/%s/claims" % c["id"]
    first = post(stack, path, token, headers={"Idempotency-Key": "grab-1"})
    again = post(stack, path, token, headers={"Idempotency-Key": "grab-1"})
    assert first.status_code == again.status_code == 201
    assert again.json()["code"] == first.json()["code"]
    assert remaining(stack, c["id"]) == 4
    problem(post(stack, path, token, headers={"Idempotency-Key": "bad key with spaces"}), 400, "VALIDATION_ERROR")


def test_expired_coupons_cannot_be_redeemed(stack):
    merchant = new_merchant(stack)
    deadline = now() + datetime.timedelta(seconds=3)
    c = new_campaign(stack, merchant["id"], claim_ends_at=iso(deadline), redeem_ends_at=iso(deadline))
    (_, token), = client.projected_members(stack, 1)
    r = post(stack, "/api/v1/campaigns/%s/claims" % c["id"], token)
    assert r.status_code == 201, r.text
    wait_for(lambda: now() > deadline + datetime.timedelta(milliseconds=200), what="the deadline")
    problem(post(stack, "/api/v1/coupons/%s/redeem" % r.json()["code"], merchant_token(merchant["id"])),
            410, "EXPIRED")
    assert get(stack, "/api/v1/members/me/coupons", token).json()["items"][0]["status"] == "expired"
    problem(post(stack, "/api/v1/campaigns/%s/claims" % c["id"], token), 409, "NOT_OPEN")


# ---- staff scopes ---------------------------------------------------------------------------------------------
def test_staff_routes_keep_to_role_and_scope(stack):
    chengdu = tokens.issue("acc_cd_%s" % uuid.uuid4().hex[:6], "union_admin", scope="5101")
    mianyang = tokens.issue("acc_my_%s" % uuid.uuid4().hex[:6], "union_admin", scope="5107")
    merchant = new_merchant(stack, chengdu)
    problem(post(stack, "/api/v1/merchants", chengdu, {"name": "绵阳店", "uscc": builders.new_uscc(), "region_code": "510703"}),
            403, "OUT_OF_SCOPE")
    problem(post(stack, "/api/v1/campaigns", chengdu, campaign_body(merchant["id"], eligibility={
        "region_codes": ["5107"]})), 403, "OUT_OF_SCOPE")
    problem(post(stack, "/api/v1/campaigns", merchant_token(merchant["id"]), campaign_body(merchant["id"])),
            403, "FORBIDDEN")
    problem(post(stack, "/api/v1/merchants", tokens.issue("usr_x", "member"), {}), 403, "FORBIDDEN")
    problem(get(stack, "/api/v1/admin/stats/benefits", tokens.issue("usr_x", "member")), 403, "FORBIDDEN")
    problem(get(stack, "/api/v1/admin/stats/benefits"), 401, "UNAUTHORIZED")
    c = new_campaign(stack, merchant["id"], chengdu, eligibility={"region_codes": []})
    assert c["id"] in {s["campaign_id"] for s in get(stack, "/api/v1/admin/stats/benefits", chengdu).json()["items"]}
    assert c["id"] not in {s["campaign_id"] for s in
                           get(stack, "/api/v1/admin/stats/benefits", mianyang).json()["items"]}
    (_, far), = client.projected_members(stack, 1, region="510703")  # a Chengdu campaign is not for Mianyang members
    problem(post(stack, "/api/v1/campaigns/%s/claims" % c["id"], far), 403, "NOT_ELIGIBLE")
    problem(get(stack, "/api/v1/campaigns", params={"cursor": "!!"}), 400, "VALIDATION_ERROR")
    problem(get(stack, "/api/v1/campaigns", params={"status": "soon"}), 400, "VALIDATION_ERROR")


# ---- contention with two replicas -----------------------------------------------------------------------------
def test_claims_and_redemptions_at_once_with_two_replicas(make_stack):
    """40 members claim 3 times each at once on quota 15, limit 2; ten tills redeem one code at once; member_joined
    is redelivered: exactly the quota is issued, nobody over the limit, one redemption, one welcome coupon each."""
    stack = make_stack(replicas={"benefits": 2})
    merchant = new_merchant(stack)
    quota, limit = 15, 2
    c = new_campaign(stack, merchant["id"], quota=quota, per_member_limit=limit)
    welcome = new_campaign(stack, merchant["id"], welcome=True, quota=1000)
    joined = [builders.joined_event("usr_%s" % uuid.uuid4().hex[:12]) for _ in range(40)]
    project(stack, joined)
    members = [(e["data"]["user_id"], tokens.issue(e["data"]["user_id"], "member")) for e in joined]
    outcomes, lock = [], threading.Lock()
    start = threading.Barrier(len(members))
    sold_out = client.EventTap(stack.env["AMQP_URI"], "benefits", "campaign_sold_out")

    def grab(token):
        start.wait()
        for _ in range(3):
            r = post(stack, "/api/v1/campaigns/%s/claims" % c["id"], token)
            with lock:
                outcomes.append(r.status_code if r.status_code == 201 else r.json()["code"])
    threads = [threading.Thread(target=grab, args=(t,)) for _, t in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    coupons = stack.db("benefits").coupons
    # the store is the judge: a claim the gateway gave up on (504 on a starved machine) may have been issued
    assert set(outcomes) <= {201, "SOLD_OUT", "LIMIT_REACHED", "SERVICE_TIMEOUT"}, outcomes
    assert "SOLD_OUT" in outcomes and outcomes.count(201) <= quota
    assert coupons.count_documents({"campaign_id": c["id"]}) == quota
    per_member = {}
    for cp in coupons.find({"campaign_id": c["id"]}):
        per_member[cp["user_id"]] = per_member.get(cp["user_id"], 0) + 1
    assert max(per_member.values()) <= limit
    assert remaining(stack, c["id"]) == 0
    wait_for(lambda: sold_out.messages(campaign_id=c["id"]), what="campaign_sold_out")
    time.sleep(1.0)  # a second one would have arrived by now
    assert len(sold_out.messages(campaign_id=c["id"])) == 1
    sold_out.close()

    # one code redeemed from ten tills at once (two replicas): once
    code = coupons.find_one({"campaign_id": c["id"]})["code"]
    results = []

    def redeem():
        r = post(stack, "/api/v1/coupons/%s/redeem" % code, merchant_token(merchant["id"]))
        with lock:
            results.append(r.status_code if r.status_code == 200 else r.json()["code"])
    tills = [threading.Thread(target=redeem) for _ in range(10)]
    for t in tills:
        t.start()
    for t in tills:
        t.join()
    assert sorted(results, key=str) == [200] + ["ALREADY_REDEEMED"] * 9, results
    assert sum(d["redeemed"] for d in stack.db("benefits").redemptions.find({"campaign_id": c["id"]})) == 1

    # every one of the 40 got one welcome coupon; the same member_joined delivered again (to either replica), and
    # a later member_joined of the same people, add none
    wait_for(lambda: coupons.count_documents({"campaign_id": welcome["id"]}) == 40, what="welcome coupons")
    dispatch = event_dispatcher({"AMQP_URI": stack.env["AMQP_URI"], "serializer": "json"})
    for env in joined + joined[:10] + [builders.joined_event(u) for u, _ in members[:10]]:
        dispatch("membership", "member_joined", env)
    processed = stack.db("benefits").processed_events
    wait_for(lambda: processed.count_documents({}) == 50, what="the later events")
    wait_for(lambda: queue_drained(stack, "evt-membership-member_joined--benefits.on_member_joined"),
             what="the redelivered events")
    assert coupons.count_documents({"campaign_id": welcome["id"]}) == 40
    assert stack.db("benefits").welcome_grants.count_documents({"campaign_id": welcome["id"]}) == 40


def queue_drained(stack, queue):
    """No message of ``queue`` is waiting; then a moment for the ones a replica holds to be handled (they were
    published before the later events that were seen handled, so they were delivered first)."""
    from kombu import Connection
    with Connection(stack.env["AMQP_URI"]) as conn:
        ready = conn.default_channel.queue_declare(queue, passive=True).message_count
    if ready:
        return False
    time.sleep(1)
    return True


# ---- read your own writes -------------------------------------------------------------------------------------
def test_a_member_answered_active_claims_in_the_very_next_request(stack):
    """A join into an auto-approving union, and an approval, answered ``active`` by membership: the member's very
    next request, a claim, is issued a coupon. So that benefits' projection certainly has not caught up, its
    ``member_joined`` queue is unbound from membership's exchange for the test (those events do not reach benefits
    at all): only benefits asking membership can make these claims succeed."""
    from kombu import Connection

    from unionhub_kit import topology
    queue = topology.queue_name(topology.find("benefits", "on_member_joined"))
    exchange = topology.exchange_name("membership")
    admin = client.admin_token(stack)
    merchant = new_merchant(stack, admin)
    c = new_campaign(stack, merchant["id"], admin, quota=10, title="即领即用")
    path = "/api/v1/campaigns/%s/claims" % c["id"]
    pending_union = client.create_union(stack, admin, auto_approve=False)
    with Connection(stack.env["AMQP_URI"]) as conn:
        conn.default_channel.queue_unbind(queue=queue, exchange=exchange, routing_key="member_joined")
        try:
            token, member, _ = client.new_member(stack)  # joins an auto-approving union: active at once
            assert member["status"] == "active"
            r = post(stack, path, token)
            assert r.status_code == 201, r.text

            late = client.member_token(stack)
            joined = client.join(stack, late, union_id=pending_union["id"])
            assert joined["status"] == "pending"
            problem(post(stack, path, late), 403, "NOT_ELIGIBLE")  # pending: not a member yet (nothing remembered)
            r = post(stack, "/api/v1/admin/members/%s/approve" % joined["id"], admin)
            assert r.status_code == 200 and r.json()["status"] == "active", r.text
            r = post(stack, path, late)
            assert r.status_code == 201, r.text
            never = tokens.issue("usr_%s" % uuid.uuid4().hex[:12], "member")  # never joined: still refused
            problem(post(stack, path, never), 403, "NOT_ELIGIBLE")
        finally:
            conn.default_channel.queue_bind(queue=queue, exchange=exchange, routing_key="member_joined")
    assert remaining(stack, c["id"]) == 8

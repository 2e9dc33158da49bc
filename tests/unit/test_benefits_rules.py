"""Benefits rules without broker or store: schemas, windows, eligibility, scopes, codes, coupon states, views."""
import datetime

import pytest
from marshmallow import ValidationError

from services.benefits import domain, schemas, store
from unionhub_kit import catalog, events
from unionhub_kit.errors import AppError

NOW = datetime.datetime(2026, 5, 1, 2, 0, tzinfo=datetime.timezone.utc)
H = datetime.timedelta(hours=1)


def body(**kw):
    b = {"title": "满50减10", "merchant_id": "mer_1", "face_value_cents": 1000, "min_spend_cents": 5000, "quota": 10,
         "per_member_limit": 1, "claim_starts_at": "2099-05-01T10:00:00+08:00",
         "claim_ends_at": "2099-05-02T10:00:00+08:00", "redeem_ends_at": "2099-05-31T00:00:00Z"}
    b.update(kw)
    return b


def campaign(**kw):
    c = {"_id": "cmp_1", "title": "t", "merchant_id": "mer_1", "face_value_cents": 1000, "min_spend_cents": 0,
         "quota": 10, "per_member_limit": 2, "claim_starts_at": NOW - H, "claim_ends_at": NOW + H,
         "redeem_ends_at": NOW + 10 * H, "welcome": False, "scope": "51",
         "eligibility": {"region_codes": [], "occupation_groups": [], "union_ids": []}, "created_at": NOW}
    c.update(kw)
    return c


MEMBER = {"_id": "usr_1", "status": "active", "union_id": "un_5101040001", "union_code": "5101040001",
          "region_code": "510104", "occupation_group": "courier"}


def errors_of(schema, data):
    with pytest.raises(ValidationError) as exc:
        schema().load(data)
    return exc.value.messages


# ---- schemas --------------------------------------------------------------------------------------------------
def test_a_valid_campaign_loads_in_utc_with_defaults_and_round_trips_through_dump():
    data = schemas.CampaignCreate().load(body(eligibility={"region_codes": ["510100", "510104"]}))
    assert data["claim_starts_at"] == datetime.datetime(2099, 5, 1, 2, 0, tzinfo=datetime.timezone.utc)
    assert data["eligibility"] == {"region_codes": ["5101", "510104"], "occupation_groups": [], "union_ids": []}
    assert data["welcome"] is False
    assert schemas.CampaignCreate().load(schemas.CampaignCreate().dump(data)) == data
    assert schemas.CampaignCreate().load(body(eligibility={}))["eligibility"]["region_codes"] == []
    no_spend = body()
    del no_spend["min_spend_cents"]
    assert schemas.CampaignCreate().load(no_spend)["min_spend_cents"] == 0


@pytest.mark.parametrize("field,value", [
    ("quota", 0), ("quota", -1), ("quota", 1.5), ("quota", "10"), ("quota", True), ("per_member_limit", 0),
    ("face_value_cents", 10.0), ("face_value_cents", "1000"), ("face_value_cents", 0), ("min_spend_cents", -1),
    ("min_spend_cents", 1.25), ("title", ""), ("merchant_id", "../etc"), ("claim_starts_at", "tomorrow"),
    ("claim_starts_at", "2099-05-01T10:00:00"), ("welcome", "yes"), ("eligibility", {"region_codes": ["5199"]}),
    ("eligibility", {"region_codes": ["110101"]}), ("eligibility", {"occupation_groups": ["pilot"]}),
    ("eligibility", {"union_ids": ["bad id!"]}), ("eligibility", {"extra": []}), ("extra", 1),
])
def test_bad_campaign_fields_are_validation_errors(field, value):
    assert errors_of(schemas.CampaignCreate, body(**{field: value}))


def test_windows_in_the_wrong_order_or_over_are_refused():
    assert "claim_ends_at" in errors_of(schemas.CampaignCreate, body(claim_ends_at=body()["claim_starts_at"]))
    assert "claim_ends_at" in errors_of(schemas.CampaignCreate, body(claim_starts_at="2099-06-01T00:00:00Z"))
    assert "redeem_ends_at" in errors_of(schemas.CampaignCreate, body(redeem_ends_at="2099-05-01T12:00:00Z"))
    assert "claim_ends_at" in errors_of(schemas.CampaignCreate, body(claim_starts_at="2020-01-01T00:00:00Z",
                                                                      claim_ends_at="2020-01-02T00:00:00Z"))
    ok = domain.window_errors(NOW, NOW + H, NOW + H, NOW)
    assert ok == {}  # redemption may end with the claim window


def test_merchant_schema_checks_uscc_and_region():
    assert schemas.MerchantCreate().load({"name": "面馆", "uscc": "91512081ma62k0260e", "region_code": "510104"})[
        "uscc"] == "91512081MA62K0260E"
    assert "uscc" in errors_of(schemas.MerchantCreate, {"name": "面馆", "uscc": "91512081MA62K0260F",
                                                        "region_code": "510104"})
    assert "region_code" in errors_of(schemas.MerchantCreate, {"name": "面馆", "uscc": "91512081MA62K0260E",
                                                               "region_code": "5101"})


# ---- eligibility, windows, limits -----------------------------------------------------------------------------
def test_eligibility_dimensions_combine_with_and():
    assert domain.ineligibility(campaign(), MEMBER) is None
    elig = {"region_codes": ["5101"], "occupation_groups": ["courier", "delivery_rider"], "union_ids": []}
    assert domain.ineligibility(campaign(eligibility=elig), MEMBER) is None
    assert domain.ineligibility(campaign(eligibility=dict(elig, region_codes=["5107"])), MEMBER)
    assert domain.ineligibility(campaign(eligibility=dict(elig, occupation_groups=["care_worker"])), MEMBER)
    assert domain.ineligibility(campaign(eligibility=dict(elig, union_ids=["un_5101040002"])), MEMBER)
    assert domain.ineligibility(campaign(eligibility=dict(elig, union_ids=["un_5101040001"])), MEMBER) is None
    assert domain.ineligibility(campaign(scope="5107"), MEMBER)  # created by Mianyang staff
    assert domain.ineligibility(campaign(), dict(MEMBER, status="left"))
    assert domain.ineligibility(campaign(), None)


def test_claim_checks_come_in_api_order():
    def code(c, m=MEMBER, now=NOW):
        with pytest.raises(AppError) as exc:
            domain.check_claim(c, m, now)
        return exc.value.status, exc.value.code
    assert code(campaign(), None) == (403, "NOT_ELIGIBLE")
    assert code(campaign(claim_starts_at=NOW + H, claim_ends_at=NOW + 2 * H)) == (409, "NOT_OPEN")
    assert code(campaign(), now=NOW + H) == (409, "NOT_OPEN")  # the window is half-open
    assert code(campaign(), dict(MEMBER, claims={"cmp_1": 2})) == (409, "LIMIT_REACHED")
    assert code(campaign(welcome=True)) == (403, "NOT_ELIGIBLE")
    domain.check_claim(campaign(), dict(MEMBER, claims={"cmp_1": 1}), NOW)  # one more is fine


def test_status_and_remaining():
    assert domain.campaign_status(campaign(), NOW) == "live"
    assert domain.campaign_status(campaign(), NOW - 2 * H) == "upcoming"
    assert domain.campaign_status(campaign(), NOW + H) == "ended"
    assert domain.remaining(campaign(), None) == 10 and domain.claimed(campaign(), None) == 0
    assert domain.remaining(campaign(), 4) == 4 and domain.claimed(campaign(), 4) == 6


def test_stock_buckets_add_up_to_the_quota_and_are_evenly_spaced():
    for quota in (1, 5, 31, 32, 33, 500, 10 ** 6 + 7):
        buckets = store.stock_buckets("cmp_1", quota)
        assert sum(b["left"] for b in buckets) == quota
        assert len(buckets) == min(quota, domain.STOCK_BUCKETS)
        assert max(b["left"] for b in buckets) - min(b["left"] for b in buckets) <= 1
        assert len({b["_id"] for b in buckets}) == len(buckets)
        assert [b["pos"] for b in buckets] == sorted(b["pos"] for b in buckets) and buckets[0]["pos"] == 0
        assert all(0 <= b["pos"] < 1 for b in buckets)


def test_bucket_pool_leases_each_bucket_to_one_claim_at_a_time():
    pool = domain.BucketPool(4)
    leased = [pool.lease() for _ in range(4)]
    assert sorted(leased) == [0, 1, 2, 3] and pool.lease() is None
    pool.release([leased[0], leased[1]])
    pool.emptied(leased[1])
    pool.release([leased[1]])  # an empty bucket is not leased again
    assert pool.lease() == leased[0] and pool.lease() is None
    pool.release([leased[0], leased[0]])
    assert pool.free == [leased[0]]


def test_bucket_pool_finishes_a_bucket_before_opening_another_and_retries_elsewhere():
    for _ in range(20):
        pool = domain.BucketPool(8)
        first = pool.lease()
        pool.release([first])  # stock left: the same bucket again
        assert pool.lease() == first
        pool.release([first], conflicted=True)  # aborted by another replica's write: every other bucket first
        assert [pool.lease() for _ in range(7)].count(first) == 0 and pool.lease() == first
        pool.emptied(first)
        pool.release([first])
        assert pool.lease() is None
    starts = {domain.BucketPool(64).lease() for _ in range(50)}
    assert len(starts) > 10  # replicas open buckets in different orders


# ---- scopes ---------------------------------------------------------------------------------------------------
def test_scope_and_area_rules():
    assert domain.scope_of({"role": "union_admin", "scope": "510100"}) == "5101"
    with pytest.raises(AppError):
        domain.scope_of({"role": "member", "sub": "u"})
    with pytest.raises(AppError) as exc:
        domain.require_in_scope("5107", "5101")
    assert exc.value.code == "OUT_OF_SCOPE"
    assert domain.areas_of([], "5101") == ["5101"]
    assert domain.area_path(["510104"]) == ["51", "5101", "510104"]
    assert domain.area_path(["510104", "510105"]) == ["51", "5101"]
    assert domain.area_path(["5101", "5107"]) == ["51"]
    assert domain.area_path(["5101040001"]) == ["51", "5101", "510104", "5101040001"]
    assert domain.region_overlap("5101") == (["51", "5101"], "5101")


# ---- codes, coupons, redemption -------------------------------------------------------------------------------
def test_codes_are_long_random_and_qr_friendly():
    codes = {domain.new_code() for _ in range(2000)}
    assert len(codes) == 2000
    for c in list(codes)[:50]:
        assert len(c) == 20 and set(c) <= set(domain.CODE_ALPHABET)
        assert domain.normalize_code(c.lower()) == c
        assert domain.normalize_code(c[:5] + " " + c[5:]) == c
    assert domain.normalize_code("short") is None and domain.normalize_code("0" * 20) is None
    assert domain.normalize_code(None) is None


def test_redeem_checks():
    cp = domain.new_coupon(campaign(), "usr_1", NOW)
    assert cp["status"] == "unused" and 0 <= cp["shard"] < domain.STATS_SHARDS and cp["expires_at"] == NOW + 10 * H
    merchant = {"role": "merchant", "merchant_id": "mer_1"}

    def code(c, actor=merchant, now=NOW):
        with pytest.raises(AppError) as exc:
            domain.check_redeem(c, actor, now)
        return exc.value.status, exc.value.code
    domain.check_redeem(cp, merchant, NOW)
    assert code(None) == (404, "NOT_FOUND")
    assert code(cp, {"role": "merchant", "merchant_id": "mer_2"}) == (403, "FORBIDDEN")
    assert code(dict(cp, status="redeemed")) == (409, "ALREADY_REDEEMED")
    assert code(cp, now=NOW + 10 * H) == (410, "EXPIRED")
    assert code(dict(cp, status="expired")) == (410, "EXPIRED")
    assert domain.coupon_status(cp, NOW + 11 * H) == "expired"


def test_event_data_validates_against_the_catalogue_and_never_carries_the_code():
    c = campaign()
    cp = dict(domain.new_coupon(c, "usr_1", NOW), redeemed_at=NOW)
    for event, data in (("campaign_published", domain.published_data(c)), ("coupon_claimed", domain.claimed_data(cp)),
                        ("coupon_redeemed", domain.redeemed_data(cp)), ("campaign_sold_out", domain.sold_out_data(c))):
        env = events.build("benefits", event, data)
        assert catalog.schema_for("benefits", event)().validate(env["data"]) == {}
        assert cp["code"] not in str(env)


def test_views_are_json_safe():
    import json
    c = campaign()
    cp = domain.new_coupon(c, "usr_1", NOW)
    json.dumps(domain.campaign_view(c, NOW, 3))
    json.dumps(domain.coupon_view(cp, NOW))
    stats = domain.stats_view(c, 3, {"redeemed": 1, "redeemed_value_cents": 1000}, NOW)
    assert (stats["claimed"], stats["remaining"], stats["redeemed"], stats["redeemed_value_cents"]) == (7, 3, 1, 1000)
    assert domain.coupon_view(cp, NOW)["code"] == cp["code"]
    assert "code" not in domain.redeemed_view(dict(cp, redeemed_at=NOW))


def test_cursors_round_trip_and_garbage_is_a_400():
    assert domain.decode_cursor(domain.encode_cursor("cmp_65f0")) == "cmp_65f0"
    for bad in ("%%%", "AAAA", domain.encode_cursor("\x00x")):
        with pytest.raises(AppError) as exc:
            domain.decode_cursor(bad)
        assert exc.value.code == "VALIDATION_ERROR"
    page = domain.page([{"id": "a_1"}, {"id": "a_2"}, {"id": "a_3"}], 2, lambda v: v["id"])
    assert [i["id"] for i in page["items"]] == ["a_1", "a_2"] and domain.decode_cursor(page["next_cursor"]) == "a_2"


def test_views_match_the_documented_answers():
    c = dict(campaign(), merchant_name="面馆", eligibility={"region_codes": ["5101"], "occupation_groups": [],
                                                            "union_ids": []})
    cp = domain.new_coupon(c, "usr_1", NOW)
    redeemed = dict(cp, status="redeemed", redeemed_at=NOW)
    merchant = {"_id": "mer_1", "name": "面馆", "uscc": "91512081MA62K0260E", "region_code": "510104",
                "created_at": NOW}
    for schema, view in ((schemas.CampaignAnswer, domain.campaign_view(c, NOW, 3)),
                         (schemas.CouponAnswer, domain.coupon_view(cp, NOW)),
                         (schemas.RedeemAnswer, domain.redeemed_view(redeemed)),
                         (schemas.MerchantAnswer, domain.merchant_view(merchant)),
                         (schemas.CampaignStats, domain.stats_view(c, 3, {}, NOW))):
        assert schema().validate(view) == {}, schema
        assert set(view) == set(schema().fields), schema

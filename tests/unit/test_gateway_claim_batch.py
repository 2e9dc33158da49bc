"""gateway.routes.benefits.claim_batch: one ``benefits.claim_many`` call per gateway batch, its answers handed back
one per request (a fake benefits proxy: no broker; the real path is covered end to end in tests/e2e)."""
import pytest
from nameko.exceptions import MethodNotFound, serialize

from gateway.routes.benefits import MAX_CLAIM_SHARDS, claim_batch, claim_key, claim_shards
from unionhub_kit.errors import AppError, Conflict

ITEMS = [{"actor": {"sub": "usr_%d" % i, "role": "member"}, "idempotency_key": None, "request_id": "r%d" % i}
         for i in range(3)]


class FakeBenefits:
    def __init__(self, answers=None, old=False):
        self.answers, self.old, self.calls = answers, old, []

    def claim_many(self, campaign_id, items):
        self.calls.append(("claim_many", campaign_id, len(items)))
        if self.old:
            raise MethodNotFound("claim_many")
        return self.answers

    def claim(self, actor, campaign_id, key):
        self.calls.append(("claim", campaign_id, actor["sub"]))
        if actor["sub"] == "usr_1":
            raise Conflict("All coupons of this campaign have been claimed.", code="SOLD_OUT")
        return {"code": "C-" + actor["sub"]}


def test_each_request_gets_its_own_answer_and_errors_come_back_as_app_errors():
    sold_out = serialize(Conflict("All coupons of this campaign have been claimed.", code="SOLD_OUT"))
    fake = FakeBenefits([{"result": {"code": "A"}}, {"error": sold_out}, {"result": {"code": "B"}}])
    out = claim_batch(fake, "cmp_1", ITEMS)
    assert fake.calls == [("claim_many", "cmp_1", 3)]
    assert out[0] == {"code": "A"} and out[2] == {"code": "B"}
    assert isinstance(out[1], AppError) and (out[1].status, out[1].code) == (409, "SOLD_OUT")


def test_an_answer_of_the_wrong_length_is_an_error_not_a_misrouted_coupon():
    with pytest.raises(RuntimeError):
        claim_batch(FakeBenefits([{"result": {"code": "A"}}]), "cmp_1", ITEMS)


def test_a_benefits_process_without_claim_many_is_called_once_per_claim():
    fake = FakeBenefits(old=True)
    out = claim_batch(fake, "cmp_1", ITEMS)
    assert fake.calls[0] == ("claim_many", "cmp_1", 3)
    assert sorted(c[2] for c in fake.calls[1:]) == ["usr_0", "usr_1", "usr_2"]
    assert out[0] == {"code": "C-usr_0"} and out[2] == {"code": "C-usr_2"}
    assert isinstance(out[1], AppError) and out[1].code == "SOLD_OUT"


def test_one_shard_keys_claims_by_campaign_and_more_split_a_campaign_by_member():
    assert claim_key("cmp_1", "usr_a") == "cmp_1" and claim_key("cmp_1", "usr_a", 1) == "cmp_1"
    users = ["usr_%04d" % i for i in range(1000)]
    keys = [claim_key("cmp_1", u, 4) for u in users]
    assert set(keys) == {"cmp_1|0", "cmp_1|1", "cmp_1|2", "cmp_1|3"}  # 1,000 members reach every shard
    assert keys == [claim_key("cmp_1", u, 4) for u in users]  # the same member, the same shard, every time
    assert max(keys.count(k) for k in set(keys)) < 400  # roughly even (250 each)
    assert {claim_key("cmp_2", u, 4).split("|")[0] for u in users} == {"cmp_2"}
    assert (claim_shards(0), claim_shards(4), claim_shards(10 ** 6)) == (1, 4, MAX_CLAIM_SHARDS)


def test_the_batch_goes_with_its_affinity_key():
    class Keyed(FakeBenefits):
        def with_affinity(self, key):
            self.calls.append(("key", key))
            return self
    fake = Keyed([{"result": {"code": "A"}}] * 3)
    claim_batch(fake, "cmp_1", ITEMS, "cmp_1|2")
    claim_batch(fake, "cmp_1", ITEMS)
    assert [c for c in fake.calls if c[0] == "key"] == [("key", "cmp_1|2"), ("key", "cmp_1")]
    assert ("claim_many", "cmp_1", 3) in fake.calls

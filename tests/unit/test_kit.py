"""Unit tests of the shared kit's pure functions."""
import datetime

import jwt
import pytest
from marshmallow import ValidationError
from nameko.exceptions import deserialize, serialize

from unionhub_kit import crypto, events, logs, regions, tokens
from unionhub_kit.consumer import ReliableEventHandler
from unionhub_kit.errors import AppError, Conflict, NotFound
from unionhub_kit.topology import SUBSCRIPTIONS, queue_name, queues_for


def test_region_prefix_rules():
    assert regions.normalize_prefix("510100") == "5101"
    assert regions.normalize_prefix("510000") == "51"
    assert regions.normalize_prefix("510104") == "510104"
    assert regions.is_known_prefix("5101") and regions.is_known_prefix("510100") and regions.is_known_prefix("51")
    assert not regions.is_known_prefix("5199") and not regions.is_known_prefix("11") and not regions.is_known_prefix("x")
    assert regions.in_scope("5101040001", "51")
    assert regions.in_scope("5101040001", "510100")
    assert regions.in_scope("510104", "510104")
    assert not regions.in_scope("510300", "5101")
    assert not regions.in_scope("510100", "510104")  # a county admin cannot act on its prefecture


def test_reference_data_counts():
    assert len(regions.prefectures()) == 21
    assert len(regions.counties()) == 183
    assert regions.all_codes()["510104"] == "锦江区"


def test_app_errors_survive_an_rpc_hop():
    exc = deserialize(serialize(Conflict("already", code="ALREADY_MEMBER")))
    assert isinstance(exc, Conflict) and exc.status == 409 and exc.code == "ALREADY_MEMBER"
    doc = deserialize(serialize(AppError("bad", code="X", status=422, errors={"a": ["b"]}))).to_problem()
    assert doc == {"type": "about:blank", "status": 422, "title": "Unprocessable Entity", "detail": "bad",
                   "code": "X", "errors": {"a": ["b"]}}
    assert deserialize(serialize(NotFound("no"))).code == "NOT_FOUND"


def test_envelope_is_cloudevents_and_validates_data():
    data = {"campaign_id": "c1", "quota": 5}
    env = events.build("benefits", "campaign_sold_out", data, subject="c1", request_id="r1")
    assert env["specversion"] == "1.0" and env["source"] == "/unionhub/benefits"
    assert env["type"] == "org.unionhub.benefits.campaign_sold_out.v1"
    assert env["time"].endswith("Z") and env["datacontenttype"] == "application/json"
    assert events.parse(env, {("benefits", "campaign_sold_out")})["data"] == data
    with pytest.raises(ValueError):
        events.build("benefits", "campaign_sold_out", {"campaign_id": "c1"})  # quota missing
    with pytest.raises(KeyError):
        events.build("benefits", "no_such_event", {})
    with pytest.raises(ValidationError):
        events.parse(env, {("benefits", "coupon_claimed")})  # wrong type for this binding


def test_redaction_of_personal_data_codes_and_tokens():
    token = tokens.issue("u1", "member")
    line = logs.redact("id=510104198001011236 phone 13812345678 code=123456 Authorization: Bearer %s" % token)
    assert "510104198001011236" not in line and "13812345678" not in line
    assert "123456" not in line and token not in line
    assert "5101**********1236" in line and "138****5678" in line


def test_tokens_reject_forged_expired_and_unknown_roles():
    assert tokens.verify(tokens.issue("u1", "member"))["sub"] == "u1"
    forged = jwt.encode({"sub": "u1", "role": "union_admin", "iss": "unionhub", "iat": 0, "exp": 2 ** 40},
                        "not-the-key", algorithm="HS256")
    with pytest.raises(AppError) as e:
        tokens.verify(forged)
    assert e.value.code == "INVALID_TOKEN"
    with pytest.raises(AppError) as e:
        tokens.verify(tokens.issue("u1", "member", ttl_seconds=-10))
    assert e.value.code == "TOKEN_EXPIRED"
    with pytest.raises(AppError):
        tokens.verify(tokens.issue("u1", "root"))


def test_a_verified_token_is_checked_again_for_expiry_tampering_and_rotation(monkeypatch):
    """Signatures are checked once per process (tokens._verified); expiry at every use; the cache is keyed by the
    whole token; a change of the root secrets empties it."""
    token = tokens.issue("u1", "member", ttl_seconds=60)
    claims = tokens.verify(token)
    assert token in tokens._verified
    claims["sub"] = "someone-else"  # a caller changing its copy changes nothing cached
    assert tokens.verify(token)["sub"] == "u1"
    head, payload, sig = token.split(".")
    with pytest.raises(AppError) as e:  # same header and claims, another signature: checked, refused
        tokens.verify("%s.%s.%s" % (head, payload, sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")))
    assert e.value.code == "INVALID_TOKEN"
    real_time = tokens.time.time
    monkeypatch.setattr(tokens.time, "time", lambda: real_time() + 61)  # past its exp: refused from the cache
    with pytest.raises(AppError) as e:
        tokens.verify(token)
    assert e.value.code == "TOKEN_EXPIRED" and token not in tokens._verified
    monkeypatch.setattr(tokens.time, "time", real_time)
    assert tokens.verify(token)["sub"] == "u1"
    # the root it was signed with is gone (rotation finished): the cache is emptied and the token refused
    monkeypatch.setenv("UNIONHUB_SECRET", "a-brand-new-root-secret-of-at-least-32-characters")
    with pytest.raises(AppError) as e:
        tokens.verify(token)
    assert e.value.code == "INVALID_TOKEN" and not tokens._verified


def test_keyed_hash_and_encryption():
    h = crypto.keyed_hash("510104198001011236")
    assert h == crypto.keyed_hash("510104198001011236") and "510104198001011236" not in h
    c = crypto.encrypt("510104198001011236")
    assert "510104198001011236" not in c and crypto.decrypt(c) == "510104198001011236"


def test_signed_deliveries_cover_the_timestamp_and_expire():
    headers = crypto.signed_headers(b'{"a":1}', "k", "dlv_1", now=1_000_000)
    assert headers["X-UnionHub-Timestamp"] == "1000000" and headers["X-UnionHub-Delivery"] == "dlv_1"
    assert headers["X-UnionHub-Signature"] == crypto.sign(b'{"a":1}', "k", 1_000_000)
    assert crypto.verify_signed(b'{"a":1}', headers, "k", now=1_000_299)
    assert not crypto.verify_signed(b'{"a":1}', headers, "k", now=1_000_301)  # older than 5 minutes
    assert not crypto.verify_signed(b'{"a":2}', headers, "k", now=1_000_000)
    assert not crypto.verify_signed(b'{"a":1}', headers, "other", now=1_000_000)
    fresh = dict(headers, **{"X-UnionHub-Timestamp": "1000290"})  # a replay with a new timestamp
    assert not crypto.verify_signed(b'{"a":1}', fresh, "k", now=1_000_300)


def test_retry_backoff_grows_and_is_bounded():
    h = ReliableEventHandler(("membership", "member_joined"))
    h.base_ms = 100
    firsts = [h.backoff_ms(1) for _ in range(50)]
    thirds = [h.backoff_ms(3) for _ in range(50)]
    assert all(50 <= v <= 150 for v in firsts) and all(200 <= v <= 600 for v in thirds)
    assert max(h.backoff_ms(30) for _ in range(20)) <= 90000


def test_every_subscription_has_three_distinct_queues():
    names = set()
    for sub in SUBSCRIPTIONS:
        main, retry, dlq = queues_for(sub)
        assert retry.queue_arguments["x-dead-letter-routing-key"] == main.name == queue_name(sub)
        assert dlq.name == main.name + ".dlq"
        names.add(main.name)
    assert len(names) == len(SUBSCRIPTIONS)


def test_rfc3339_is_utc_z():
    dt = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=8)))
    assert events.rfc3339(dt) == "2026-01-01T19:04:05.000Z"
    assert events.parse_time("2026-01-01T19:04:05Z") == dt

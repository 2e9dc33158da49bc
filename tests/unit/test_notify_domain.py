"""Notify's pure rules: quiet hours, backoff, preferences, ids and cursors, audiences and scope, webhook targets."""
import datetime
import random
import socket

import pytest

from services.notify import domain, schemas
from unionhub_kit.errors import Forbidden, ValidationFailed
from unionhub_kit.schema import ValidationError

UTC = datetime.timezone.utc


def cst(h, m=0, day=10):
    """An aware UTC datetime for h:m China time on 2026-06-<day>."""
    return datetime.datetime(2026, 6, day, h, m, tzinfo=domain.CST).astimezone(UTC)


# ---- quiet hours ----------------------------------------------------------------------------------------------
NIGHT = {"start": "22:00", "end": "08:00"}


@pytest.mark.parametrize("now, until", [
    (cst(23, 30), cst(8, 0, day=11)),   # before midnight: ends tomorrow morning
    (cst(2, 0), cst(8, 0)),             # after midnight: ends this morning
    (cst(22, 0), cst(8, 0, day=11)),    # start is inclusive
    (cst(8, 0), None),                  # end is exclusive
    (cst(12, 0), None),
    (cst(21, 59), None),
])
def test_quiet_hours_across_midnight(now, until):
    assert domain.quiet_until(now, NIGHT) == until


def test_quiet_hours_within_a_day_and_none():
    lunch = {"start": "12:00", "end": "13:30"}
    assert domain.quiet_until(cst(12, 45), lunch) == cst(13, 30)
    assert domain.quiet_until(cst(13, 30), lunch) is None
    assert domain.quiet_until(cst(11, 59), lunch) is None
    assert domain.quiet_until(cst(3, 0), None) is None


def test_clock_offset_moves_now():
    from unionhub_kit.clock import Clock
    clock = Clock()
    clock.offset = datetime.timedelta(hours=3)
    assert abs((clock.now() - datetime.datetime.now(UTC)) - datetime.timedelta(hours=3)) < datetime.timedelta(
        seconds=5)


# ---- backoff --------------------------------------------------------------------------------------------------
def test_backoff_is_exponential_jittered_and_capped():
    class Mid:
        @staticmethod
        def uniform(a, b):
            return 1.0
    assert [domain.backoff_seconds(n, 2, 300, Mid) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert domain.backoff_seconds(20, 2, 300, Mid) == 300
    rng = random.Random(7)
    values = [domain.backoff_seconds(3, 2, 300, rng) for _ in range(200)]
    assert min(values) >= 4 and max(values) <= 12 and len(set(values)) > 100


# ---- preferences ----------------------------------------------------------------------------------------------
def test_preferences_defaults_and_channels():
    p = domain.prefs_view(None)
    assert p == {"sms": True, "push": True, "muted_categories": [], "quiet_hours": None, "language": "zh"}
    assert domain.provider_channels("member_joined", p) == ["sms", "push"]
    assert domain.provider_channels("coupon_claimed", p) == ["push"]
    assert domain.provider_channels("member_joined", dict(p, sms=False)) == ["push"]
    assert domain.provider_channels("member_joined", dict(p, muted_categories=["membership"])) == []
    assert domain.provider_channels("coupon_claimed", dict(p, muted_categories=["membership"])) == ["push"]


# ---- ids and cursors ------------------------------------------------------------------------------------------
def test_ids_sort_in_creation_order_and_cursors_round_trip():
    t0 = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    ids = [domain.new_id(t0 + datetime.timedelta(milliseconds=i)) for i in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50 and all(domain.ID_RE.match(i) for i in ids)
    assert domain.decode_cursor(domain.encode_cursor(ids[3])) == ids[3]
    assert domain.decode_cursor(None) is None


@pytest.mark.parametrize("bad", ["x", "!!!", "bjE6eHl6", domain.encode_cursor("a" * 24)[:-2], "AAAA"])
def test_malformed_cursor_is_a_validation_error(bad):
    with pytest.raises(ValidationFailed) as exc:
        domain.decode_cursor(bad)
    assert "cursor" in exc.value.errors


def test_page():
    docs = [{"_id": "%024x" % i} for i in range(4)]
    out = domain.page(docs, 3, lambda d: d["_id"])
    assert out["items"] == [d["_id"] for d in docs[:3]]
    assert domain.decode_cursor(out["next_cursor"]) == docs[2]["_id"]
    assert domain.page(docs[:2], 3, lambda d: d)["next_cursor"] is None


# ---- announcements --------------------------------------------------------------------------------------------
def test_audience_filter_combines_dimensions_inside_the_scope():
    f = domain.audience_filter({"region_codes": ["5101", "5107"], "occupation_groups": ["courier"],
                                "union_ids": []}, "510000")
    assert f["status"] == "active"
    assert f["union_code"] == {"$regex": "^51"}
    codes = f["region_code"]["$in"]
    assert {"510100", "510104", "510700", "510703"} <= set(codes)  # the prefectures and their counties
    assert all(c.startswith(("5101", "5107")) for c in codes)
    assert f["occupation_group"] == {"$in": ["courier"]}
    assert "union_id" not in f
    # the province prefix needs no region condition; the scope still applies
    f = domain.audience_filter({"region_codes": ["51", "5101"], "union_ids": ["g1"]}, "5101")
    assert "region_code" not in f and f["union_code"] == {"$regex": "^5101"} and f["union_id"] == {"$in": ["g1"]}
    assert domain.region_codes_under("510104") == ["510104"]


def test_audience_scope_checks():
    aud = {"region_codes": ["5101"], "occupation_groups": [], "union_ids": []}
    domain.check_audience_scope(aud, "51", {})
    domain.check_audience_scope(aud, "5101", {})
    with pytest.raises(Forbidden) as exc:
        domain.check_audience_scope(dict(aud, region_codes=["51"]), "5101", {})
    assert exc.value.code == "OUT_OF_SCOPE"
    with pytest.raises(Forbidden):
        domain.check_audience_scope(dict(aud, region_codes=["5107"]), "510104", {})
    # a union the projection knows outside the scope; an unknown one reaches nobody anyway
    with pytest.raises(Forbidden):
        domain.check_audience_scope({"region_codes": [], "union_ids": ["g9"]}, "5101", {"g9": "5107020001"})
    domain.check_audience_scope({"region_codes": [], "union_ids": ["g1", "g2"]}, "5101",
                                {"g1": "5101040001", "g2": None})


def test_own_announcement_is_scoped():
    doc = {"scope": "5101"}
    assert domain.own_announcement(doc, {"scope": "51"}) is doc
    from unionhub_kit.errors import NotFound
    with pytest.raises(NotFound):
        domain.own_announcement(doc, {"scope": "5107"})
    with pytest.raises(NotFound):
        domain.own_announcement(None, {"scope": "51"})


def test_require_role():
    assert domain.require_role({"sub": "u", "role": "member"}, "member")
    for actor in (None, {"sub": "u", "role": "integrator"}, {"role": "member"}):
        with pytest.raises(Forbidden):
            domain.require_role(actor, "member")


# ---- webhooks -------------------------------------------------------------------------------------------------
def test_event_types_qualified_or_bare():
    types, unknown = domain.normalize_event_types(["member_joined", "benefits.coupon_claimed", "member_joined",
                                                   "nope", "membership.nope"])
    assert types == ["membership.member_joined", "benefits.coupon_claimed"]
    assert unknown == ["nope", "membership.nope"]
    assert "notify.notification_failed" in domain.event_type_names()


@pytest.mark.parametrize("url, problem", [
    ("https://hooks.example.com/x", None),
    ("http://hooks.example.com:8080/x?y=1", None),
    ("ftp://hooks.example.com/x", "http or https"),
    ("javascript:alert(1)", "http or https"),
    ("https://user:pw@hooks.example.com/", "credentials"),
    ("https://token@hooks.example.com/", "credentials"),
    ("https:///nohost", "host"),
    ("http://hooks.example.com:99999/", "valid URL"),
])
def test_url_shape(url, problem):
    got = domain.url_problem(url)
    assert (got is None) if problem is None else (problem in got)


def fake_resolver(mapping):
    def resolve(host, port, proto=None):
        if host not in mapping:
            raise socket.gaierror("unknown")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in mapping[host]]
    return resolve


@pytest.mark.parametrize("addresses, allowed", [
    (["93.184.215.14"], True),
    (["127.0.0.1"], False),
    (["10.1.2.3"], False),
    (["192.168.1.1"], False),
    (["169.254.169.254"], False),   # cloud metadata
    (["100.64.0.1"], False),        # carrier-grade NAT
    (["::1"], False),
    (["::ffff:127.0.0.1"], False),
    (["93.184.215.14", "10.0.0.1"], False),  # any private answer refuses it
])
def test_targets_resolving_to_private_addresses_are_refused(addresses, allowed):
    resolve = fake_resolver({"h.example.com": addresses})
    problem = domain.target_problem("https://h.example.com/x", False, resolve)
    assert (problem is None) == allowed
    assert domain.target_problem("https://h.example.com/x", True, resolve) is None  # WEBHOOK_ALLOW_PRIVATE=1


def test_unresolvable_target_is_refused():
    assert "resolve" in domain.target_problem("https://nowhere.invalid/", True, fake_resolver({}))


# ---- schemas --------------------------------------------------------------------------------------------------
def errors_of(schema, data):
    with pytest.raises(ValidationError) as exc:
        schema().load(data)
    return exc.value.messages


def test_preferences_schema():
    ok = schemas.Preferences().load({"sms": False, "muted_categories": ["jobs", "benefits"],
                                     "quiet_hours": {"start": "22:00", "end": "07:30"}})
    assert ok["quiet_hours"] == {"start": "22:00", "end": "07:30"}
    assert schemas.Preferences().load({"quiet_hours": None}) == {"quiet_hours": None}
    assert "muted_categories" in errors_of(schemas.Preferences, {"muted_categories": ["spam"]})
    for bad in ({"start": "24:00", "end": "08:00"}, {"start": "7:00", "end": "08:00"}, {"start": "22:00"},
                {"start": "22:00", "end": "22:00"}, {"start": "22:00", "end": "08:00", "tz": "x"}, "22-08"):
        assert "quiet_hours" in errors_of(schemas.Preferences, {"quiet_hours": bad})
    assert "sms" in errors_of(schemas.Preferences, {"sms": "yes"})
    assert "colour" in errors_of(schemas.Preferences, {"colour": "red"})


def test_device_schema():
    assert schemas.Device().load({"platform": "ios", "token": "a" * 512})["platform"] == "ios"
    for bad in ({"platform": "ios", "token": ""}, {"platform": "ios", "token": "a" * 513},
                {"platform": "ios", "token": "a b"}, {"platform": "ios"}):
        assert "token" in errors_of(schemas.Device, bad)
    assert "platform" in errors_of(schemas.Device, {"platform": "symbian", "token": "x"})


def test_announcement_schema():
    ok = schemas.Announcement().load({"title": "t", "body": "b", "audience": {"region_codes": ["510100"]}})
    assert ok["audience"] == {"region_codes": ["5101"], "occupation_groups": [], "union_ids": []}
    assert "audience" in errors_of(schemas.Announcement, {"title": "t", "body": "b", "audience": {}})
    assert "audience" in errors_of(schemas.Announcement, {"title": "t", "body": "b", "audience": {
        "region_codes": [], "occupation_groups": [], "union_ids": []}})
    assert "audience" in errors_of(schemas.Announcement, {"title": "t", "body": "b",
                                                          "audience": {"region_codes": ["99"]}})
    assert "audience" in errors_of(schemas.Announcement, {"title": "t", "body": "b",
                                                          "audience": {"occupation_groups": ["pilot"]}})
    assert "title" in errors_of(schemas.Announcement, {"title": "", "body": "b",
                                                       "audience": {"occupation_groups": ["courier"]}})


def test_webhook_schema():
    ok = schemas.Webhook().load({"url": "https://hooks.example.com/in", "event_types": ["member_joined"],
                                 "secret": "s3cret-s3cret"})
    assert ok["event_types"] == ["membership.member_joined"]
    base = {"url": "https://hooks.example.com/in", "event_types": ["member_joined"], "secret": "s3cret-s3cret"}
    assert "url" in errors_of(schemas.Webhook, dict(base, url="ftp://x.example.com/"))
    assert "url" in errors_of(schemas.Webhook, dict(base, url="https://a:b@x.example.com/"))
    assert "event_types" in errors_of(schemas.Webhook, dict(base, event_types=["member_exploded"]))
    assert "event_types" in errors_of(schemas.Webhook, dict(base, event_types=[]))
    assert "secret" in errors_of(schemas.Webhook, dict(base, secret="short"))


def test_send_sms_schema():
    assert schemas.SendSms().load({"to": "13812345678", "template": "otp", "params": {"code": "123456"}})
    assert "params" in errors_of(schemas.SendSms, {"to": "13812345678", "template": "otp", "params": {}})
    assert "params" in errors_of(schemas.SendSms, {"to": "13812345678", "template": "otp",
                                                   "params": {"code": "12a456"}})
    assert "to" in errors_of(schemas.SendSms, {"to": "12345", "template": "otp", "params": {"code": "123456"}})
    assert "template" in errors_of(schemas.SendSms, {"to": "13812345678", "template": "spam", "params": {}})


def test_fan_out_rests_so_that_it_takes_its_duty_of_the_time():
    from services.notify import fanout
    assert fanout.rest(0.2, 0.5) == pytest.approx(0.2)  # half the time: as long a rest as the work
    assert fanout.rest(0.3, 0.25) == pytest.approx(0.9)
    assert fanout.rest(0.2, 1.0) == 0  # duty 1: unpaced
    assert fanout.rest(-1.0, 0.5) == 0

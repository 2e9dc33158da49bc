"""Stations rules without broker or store: opening hours (also past midnight) in Asia/Shanghai time, the grid cover
of a search circle against brute force, the location checks, poster codes and the nearest-first walk."""
import datetime
import random

import pytest
from marshmallow import ValidationError

from services.stations import domain, geo, schemas
from unionhub_kit.errors import AppError

UTC = datetime.timezone.utc


def cst(y, mo, d, h, mi):
    """A moment given in Asia/Shanghai wall-clock time."""
    return datetime.datetime(y, mo, d, h, mi, tzinfo=domain.CST).astimezone(UTC)


# 2026-12-07 is a Monday (1), 2026-12-13 a Sunday (7)
@pytest.mark.parametrize("hours,moment,expected", [
    ([{"days": [1], "open": "08:00", "close": "20:00"}], cst(2026, 12, 7, 8, 0), True),
    ([{"days": [1], "open": "08:00", "close": "20:00"}], cst(2026, 12, 7, 20, 0), False),
    ([{"days": [1], "open": "08:00", "close": "20:00"}], cst(2026, 12, 8, 12, 0), False),  # Tuesday
    # 22:00-06:00 on Mondays: Monday night and the small hours of Tuesday, not those of Monday
    ([{"days": [1], "open": "22:00", "close": "06:00"}], cst(2026, 12, 7, 23, 30), True),
    ([{"days": [1], "open": "22:00", "close": "06:00"}], cst(2026, 12, 8, 5, 59), True),
    ([{"days": [1], "open": "22:00", "close": "06:00"}], cst(2026, 12, 8, 6, 0), False),
    ([{"days": [1], "open": "22:00", "close": "06:00"}], cst(2026, 12, 7, 3, 0), False),
    # Sunday night runs into Monday morning (the week wraps)
    ([{"days": [7], "open": "22:00", "close": "06:00"}], cst(2026, 12, 7, 2, 0), True),
    ([{"days": [1, 2, 3, 4, 5, 6, 7], "open": "00:00", "close": "24:00"}], cst(2026, 12, 9, 23, 59), True),
    # the same UTC moment is 23:30 Monday in Shanghai: the station's time zone decides, not UTC's
    ([{"days": [1], "open": "23:00", "close": "23:59"}], datetime.datetime(2026, 12, 7, 15, 30, tzinfo=UTC), True),
])
def test_opening_hours(hours, moment, expected):
    assert domain.is_open_at(hours, moment) is expected


def test_months_are_shanghai_months():
    assert domain.month_of(datetime.datetime(2026, 11, 30, 16, 30, tzinfo=UTC)) == "2026-12"
    assert domain.previous_month(datetime.datetime(2026, 1, 5, tzinfo=UTC)) == "2025-12"


def test_covering_holds_every_point_of_the_circle():
    rng = random.Random(7)
    for _ in range(300):
        lat, lng = rng.uniform(26.1, 34.3), rng.uniform(97.4, 108.5)
        radius = rng.choice([50, 300, 1500, 3000, 12000, 50000])
        cover = set(geo.covering(lat, lng, radius))
        assert len(cover) <= 36
        level = int(next(iter(cover)).split(":")[0])
        for _ in range(20):
            plat, plng = geo.offset(lat, lng, rng.uniform(-radius, radius), rng.uniform(-radius, radius))
            if geo.haversine_m(lat, lng, plat, plng) <= radius:
                assert geo.cell_keys(plat, plng)[level] in cover


def test_haversine():
    # Chengdu Tianfu Square to Kangding: about 218 km great-circle
    assert 210000 < geo.haversine_m(30.6574, 104.0658, 30.0493, 101.9631) < 225000
    assert geo.haversine_m(30.0, 104.0, 30.0, 104.0) == 0


def test_prefecture_check_by_county_seats():
    assert geo.prefecture_matches("510100", 30.6574, 104.0658)
    assert not geo.prefecture_matches("513300", 30.6574, 104.0658)   # Chengdu is not Garze
    assert geo.prefecture_matches("513300", 30.0493, 101.9631)       # Kangding is
    with pytest.raises(AppError) as exc:
        domain.check_location("513301", {"lat": 30.6574, "lng": 104.0658})
    assert exc.value.status == 400 and "location" in exc.value.errors


def test_seed_points_fall_in_their_county():
    rng = random.Random(3)
    for code, _, _, _ in geo.seats():
        for _ in range(10):
            lat, lng = geo.place_in_county(rng, code)
            assert geo.in_sichuan_box(lat, lng) and geo.nearest_seats(lat, lng)[0][1] == code


@pytest.mark.parametrize("lat,lng,hint", [(104.06, 30.65, "swapped"), (39.9, 116.4, "bounding box"),
                                          (30.65, 110.0, "bounding box")])
def test_locations_outside_sichuan(lat, lng, hint):
    with pytest.raises(ValidationError) as exc:
        schemas.Location().load({"lat": lat, "lng": lng})
    assert hint in str(exc.value.messages)


@pytest.mark.parametrize("value", [True, "30.1", None, float("nan")])
def test_coordinates_are_numbers(value):
    with pytest.raises(ValidationError):
        schemas.Location().load({"lat": value, "lng": 104.0})


def test_poster_codes():
    codes = {domain.new_code() for _ in range(2000)}
    assert len(codes) == 2000 and all(schemas.CODE_RE.match(c) for c in codes)
    assert not set("01OIL") & set("".join(codes))
    assert domain.normalize_code(" ab-c 234 ") == "ABC234"
    assert domain.normalize_code("ABC10O") is None and domain.normalize_code("") is None


def test_rings_double_up_to_the_radius():
    assert domain.rings(3000) == [1500, 3000]
    assert domain.rings(50000) == [1500, 3000, 6000, 12000, 24000, 48000, 50000]
    assert domain.rings(200) == [200]


def test_open_counters_follow_status_and_region():
    a = {"status": "open", "region_code": "510104"}
    assert domain.open_deltas(None, a) == {"510000": 1, "510100": 1, "510104": 1}
    assert domain.open_deltas(a, dict(a, status="closed")) == {"510000": -1, "510100": -1, "510104": -1}
    assert domain.open_deltas(a, dict(a, region_code="510107")) == {"510104": -1, "510107": 1}
    assert domain.open_deltas(a, a) == {}

"""Resident ID (GB 11643), USCC (GB 32100) and phone checks, and masking, with the worked examples of DESIGN.md."""
import datetime

import pytest

from unionhub_kit import ids


@pytest.mark.parametrize("number", ["11010519491231002X", "510104198001011236"])
def test_worked_resident_ids_are_valid(number):
    assert ids.is_valid_resident_id(number)
    assert ids.id_check_char(number[:17]) == number[17]


def test_lower_case_x_is_normalised():
    assert ids.parse_resident_id("11010519491231002x") == ("11010519491231002X", datetime.date(1949, 12, 31))


@pytest.mark.parametrize("number", ["110105194912310021", "510104198001011235", "51010419800101123X"])
def test_wrong_check_character_is_refused(number):
    with pytest.raises(ValueError, match="check character"):
        ids.parse_resident_id(number)


@pytest.mark.parametrize("birth", ["19800230", "19801301", "19800000", "20010229"])
def test_impossible_birth_date_is_refused(birth):
    first17 = "510104" + birth + "123"
    with pytest.raises(ValueError, match="birth date"):
        ids.parse_resident_id(first17 + ids.id_check_char(first17))


def test_future_birth_date_is_refused():
    tomorrow = datetime.date.today() + datetime.timedelta(days=400)
    number = ids.make_resident_id(birth=tomorrow.strftime("%Y%m%d"))
    with pytest.raises(ValueError, match="not possible"):
        ids.parse_resident_id(number)


@pytest.mark.parametrize("value", ["51010419800101123", "5101041980010112366", "51010419800101A236", 510104198001011236,
                                   "", None])
def test_malformed_resident_id_is_refused(value):
    assert not ids.is_valid_resident_id(value)


def test_leap_day_is_a_real_birth_date():
    assert ids.parse_resident_id(ids.make_resident_id(birth="20000229"))[1] == datetime.date(2000, 2, 29)


def test_age_boundary_at_sixteen():
    today = datetime.date(2026, 6, 15)
    assert ids.age_on(datetime.date(2010, 6, 15), today) == 16
    assert ids.age_on(datetime.date(2010, 6, 16), today) == 15
    assert ids.age_on(datetime.date(1949, 12, 31), today) == 76


def test_worked_uscc_is_valid_and_its_check_character_is_computed():
    assert ids.is_valid_uscc("91512081MA62K0260E")
    assert ids.uscc_check_char("91512081MA62K0260") == "E"


@pytest.mark.parametrize("code", ["91512081MA62K0260F", "91512081MA62K0260", "91512081MA62K0260EE",
                                  "91512081MA62K026OE", "91512081MA62K0260I", None, ""])
def test_bad_uscc_is_refused(code):
    assert not ids.is_valid_uscc(code)


def test_generated_numbers_validate():
    assert ids.is_valid_uscc(ids.make_uscc("91510104MA6"))
    assert ids.is_valid_resident_id(ids.make_resident_id("510104", "19900101", 7))


@pytest.mark.parametrize("phone,ok", [("13812345678", True), ("19912345678", True), ("12812345678", False),
                                      ("1381234567", False), ("138123456789", False), ("+8613812345678", False),
                                      ("23812345678", False), (13812345678, False)])
def test_mainland_mobile(phone, ok):
    assert ids.is_mainland_mobile(phone) is ok


def test_masking():
    assert ids.mask_id_number("510104198001011236") == "5101**********1236"
    assert ids.mask_id_number("11010519491231002X") == "1101**********002X"
    assert ids.mask_phone("13812345678") == "138****5678"
    assert ids.mask_code("123456") == "******"
    assert ids.mask_id_number(None) is None and ids.mask_phone("") is None

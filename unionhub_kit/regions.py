"""Sichuan region reference data (GB/T 2260) and the prefix rules of API.md.

``510000`` is the province, ``510100`` a prefecture, ``510104`` a county. Where a prefix is accepted, a six-digit
code with trailing zeros means its prefix: ``510100`` == ``5101``; ``510000`` == ``51``.
"""
import csv
import functools
import os

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
PROVINCE_CODE = "510000"
PROVINCE_NAME = "四川省"


@functools.lru_cache(maxsize=1)
def prefectures():
    with open(os.path.join(DATA_DIR, "sichuan_prefectures.csv"), encoding="utf-8") as f:
        return [dict(row) for row in csv.DictReader(f)]


@functools.lru_cache(maxsize=1)
def counties():
    with open(os.path.join(DATA_DIR, "sichuan_counties.csv"), encoding="utf-8") as f:
        return [dict(row) for row in csv.DictReader(f)]


@functools.lru_cache(maxsize=1)
def all_codes():
    """Every six-digit code: province, prefectures, counties -> name."""
    codes = {PROVINCE_CODE: PROVINCE_NAME}
    codes.update({p["code"]: p["name_zh"] for p in prefectures()})
    codes.update({c["code"]: c["name_zh"] for c in counties()})
    return codes


def level_of(code):
    if code == PROVINCE_CODE:
        return "province"
    if code.endswith("00"):
        return "prefecture"
    return "county"


def normalize_prefix(code):
    """``510100`` -> ``5101``; ``510000`` -> ``51``; ``5101`` -> ``5101``; longer org codes unchanged."""
    code = str(code).strip()
    if len(code) == 6:
        if code.endswith("0000"):
            return code[:2]
        if code.endswith("00"):
            return code[:4]
    return code


def is_known_prefix(code):
    """A region prefix (2, 4 or 6 digits, or a six-digit code) naming a seeded region."""
    if not isinstance(code, str) or not code.isdigit() or len(code) not in (2, 4, 6):
        return False
    p = normalize_prefix(code)
    return any(normalize_prefix(c) == p for c in all_codes())


def is_known_code(code):
    return code in all_codes()


def in_scope(code, scope):
    """Whether an organisation or region ``code`` lies inside the admin ``scope`` (a prefix)."""
    if scope is None or code is None:
        return False
    return normalize_prefix(str(code)).startswith(normalize_prefix(str(scope))) or \
        str(code).startswith(normalize_prefix(str(scope)))


def prefecture_of(code):
    """The six-digit prefecture code of a county, prefecture or grassroots code."""
    return str(code)[:4] + "00"

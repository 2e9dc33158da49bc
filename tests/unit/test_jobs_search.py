"""Posting search, pure parts: tokens, search keys, the driving key, time windows, cursors."""
import pytest

from services.jobs import search


def test_chinese_runs_give_bigrams_and_latin_words_lower_case():
    assert search.tokens("电焊工 CNC操作工") == ["电焊", "焊工", "cnc", "操作", "作工"]
    assert search.tokens("Welding/FORKLIFT, 叉车") == ["welding", "forklift", "叉车"]


def test_full_width_text_is_normalised():
    assert search.tokens("ＣＮＣ　焊工") == ["cnc", "焊工"]


def test_a_lone_character_is_kept_and_titles_also_give_single_characters():
    assert search.tokens("月薪8000元") == ["月薪", "8000", "元"]
    assert search.tokens("焊工", unigrams=True) == ["焊", "工", "焊工"]
    assert search.query_tokens("焊") == ["焊"]


def test_query_tokens_of_punctuation_only_are_empty_and_long_queries_are_capped():
    assert search.query_tokens("!!! ，。") == []
    assert len(search.query_tokens("焊工电工钳工木工油漆工水电工钢筋工装配工普工")) == search.MAX_QUERY_TOKENS


def test_posting_tokens_cover_title_and_description_once_each():
    toks = search.posting_tokens("焊工", "负责电焊作业，welding 焊工证")
    assert toks.count("焊工") == 1
    assert {"焊", "工", "焊工", "电焊", "作业", "welding"} <= set(toks)


def test_region_prefixes_of_county_prefecture_and_province():
    assert search.region_prefixes("510104") == ["51", "5101", "510104"]
    assert search.region_prefixes("510100") == ["51", "5101"]
    assert search.region_prefixes("510000") == ["51"]


POSTING = {"title": "电焊工", "description": "持证 welding", "category": "6", "region_code": "510104",
           "salary_min": 6500}


def test_search_keys_of_a_posting():
    keys = search.search_keys(POSTING)
    assert keys[:2] == ["*", "c:6"]
    for k in ("r:5101", "r:510104", "rc:5101:6", "rc:510104:6", "s:3000", "s:5000", "w:电焊", "w:焊工", "w:welding"):
        assert k in keys
    assert "s:8000" not in keys
    assert "r:51" not in keys and "rc:51:6" not in keys  # the province holds every posting: "*" and "c:6" say it


def test_query_keys_combine_every_filter():
    flt = {"tokens": ["焊工"], "region_code": "5101", "category": "6", "salary_min": 7000}
    assert search.query_keys(flt) == ["w:焊工", "rc:5101:6", "s:5000"]
    assert search.query_keys({"region_code": "5101"}) == ["r:5101"]
    assert search.query_keys({"region_code": "51", "category": "6"}) == ["c:6"]
    assert search.query_keys({"region_code": "51"}) == ["*"]
    assert search.query_keys({"category": "4"}) == ["c:4"]
    assert search.query_keys({"salary_min": 2500}) == ["*"]  # below every band: no narrowing key
    assert search.query_keys({}) == ["*"]


def test_a_query_matches_a_posting_only_with_every_key_and_the_exact_salary():
    keys = search.search_keys(POSTING)
    doc = dict(POSTING, search_keys=keys)
    assert search.matches(doc, search.query_keys({"tokens": ["焊工"], "region_code": "5101"}))
    assert search.matches(doc, search.query_keys({"tokens": ["welding"], "region_code": "510104"}))
    assert not search.matches(doc, search.query_keys({"tokens": ["焊工"], "region_code": "5107"}))
    assert not search.matches(doc, search.query_keys({"tokens": ["叉车"]}))
    assert search.matches(doc, search.query_keys({"region_code": "51"}))
    assert search.matches(doc, ["s:5000"], salary_min=6500)
    assert not search.matches(doc, ["s:5000"], salary_min=6600)
    assert not search.matches(dict(doc, search_keys=[]), ["*"])  # closed postings carry no keys


def test_the_rarest_key_drives_the_scan_and_unknown_keys_have_no_postings():
    counts = {"w:焊工": 900, "r:5101": 5000, "*": 60000}
    assert search.choose_driver(["w:焊工", "r:5101"], counts) == "w:焊工"
    assert search.choose_driver(["w:焊工", "w:nowhere"], counts) == "w:nowhere"
    assert search.estimate_matches(["w:焊工", "r:5101"], counts, 60000) == pytest.approx(900 * 5000 / 60000)
    assert search.estimate_matches(["*"], counts, 0) == 0.0


def test_windows_hold_about_a_page_and_grow_until_it_is_full():
    day = search.DAY_MS
    plan = search.WindowPlan(driver_count=2000, expected=1000, span_ms=100 * day, want=21)
    first = plan.first()
    assert first == pytest.approx(1.3 * 21 / 1000 * 100 * day, rel=0.01)  # ~27 expected matches
    # nothing found: the next window is four times as wide (within the candidate cap)
    assert plan.next(first, 0) == pytest.approx(min(first * 4, search.WINDOW_CANDIDATES / (2000 / (100 * day))), 1)
    # matches found: sized for the 11 still missing at the density seen so far (10 in w)
    plan = search.WindowPlan(driver_count=2000, expected=1000, span_ms=100 * day, want=21)
    w = plan.first()
    w2 = plan.next(w, 10)
    assert w2 == pytest.approx(1.2 * 11 * w / 10, rel=0.01)
    assert plan.next(w2, 8) == pytest.approx(1.2 * 3 * (w + w2) / 18, rel=0.01)  # 18 found, 3 missing


def test_windows_never_ask_for_more_than_the_candidate_cap():
    day = search.DAY_MS
    plan = search.WindowPlan(driver_count=600000, expected=5, span_ms=150 * day, want=21)
    cap = search.WINDOW_CANDIDATES / (600000 / (150 * day))
    assert plan.first() <= cap + 1
    assert plan.next(plan.first(), 0) <= cap + 1
    assert search.WindowPlan(0, 0, 0, 21).first() >= search.MIN_WINDOW_MS


def test_cursor_round_trip_and_malformed_cursors():
    key = search.order_key(1796008976123, "65f0c0ffee0123456789abcd")
    assert key == "1796008976123-65f0c0ffee0123456789abcd"
    assert search.order_key_ms(key) == 1796008976123
    cursor = search.encode_cursor(key)
    assert "=" not in cursor
    assert search.decode_cursor(cursor) == key
    for bad in ("", "abc", "!!!", search.encode_cursor("1796008976123-nothex"), search.encode_cursor("x" * 40),
                "%%%%", "\u00e9t\u00e9"):
        with pytest.raises(ValueError):
            search.decode_cursor(bad)

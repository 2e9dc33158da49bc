"""The reference unions membership seeds at start: the province, 21 prefectures, 183 counties, linked by parent."""
from services.membership import seed


def test_region_unions_form_one_tree():
    docs = seed.region_unions()
    by_id = {d["_id"]: d for d in docs}
    assert len(docs) == len(by_id) == 205
    levels = [d["level"] for d in docs]
    assert (levels.count("province"), levels.count("prefecture"), levels.count("county")) == (1, 21, 183)
    province = by_id["un_510000"]
    assert province["parent_id"] is None and province["name"] == "四川省总工会"
    for d in docs:
        assert d["_id"] == "un_" + d["code"] and d["region_code"] == d["code"] and len(d["code"]) == 6
        if d["level"] != "province":
            parent = by_id[d["parent_id"]]
            assert parent["code"] == d["parent_code"]
            assert parent["level"] == {"prefecture": "province", "county": "prefecture"}[d["level"]]
    assert by_id["un_510104"]["parent_id"] == "un_510100" and by_id["un_510104"]["name"] == "锦江区总工会"
    assert all("auto_approve" not in d for d in docs)  # set on insert only: staff may change it later

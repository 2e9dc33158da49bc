"""Route x role x scope, through the real gateway, with the routes taken from the gateway's route table.

* Every route that needs a role is called by every other role (member, union_admin, merchant, employer, integrator):
  403 ``FORBIDDEN``.
* Every union_admin route is called by a county admin (Jinjiang, 510104) aimed at an object of another county
  (Fucheng, Mianyang, 510703): 403 ``OUT_OF_SCOPE`` (404 where the object's existence must not leak). Routes that
  take no object (statistics) are scoped by construction: the far county's figures are absent from the answer.
A route added to the table without an entry in ``SCOPE_CASES`` fails ``test_every_admin_route_has_a_scope_case``.
"""
import datetime
import random
import uuid

import pytest
import requests

from gateway import routes  # noqa: F401  (fills the route table)
from gateway.framework import ROUTES
from support import client
from support.client import admin_token, auth, new_uscc, staff_token
from services.stations import geo
from unionhub_kit import clock, events

NEAR, FAR = "510104", "510703"
ROLES = ("member", "union_admin", "merchant", "employer", "integrator")


def call(stack, method, path, token, body=None, params=None):
    return requests.request(method, stack.url + path, json=body, params=params, headers=auth(token), timeout=30)


def later(days):
    return events.rfc3339(clock.now() + datetime.timedelta(days=days))


def ok(r):
    assert r.status_code in (200, 201, 202), r.text
    return r.json()


@pytest.fixture(scope="module")
def world(stack):
    """One caller of each role, and one object of each kind lying in the far county."""
    admin = admin_token(stack)
    w = {"admin": admin}
    w["near_admin"] = staff_token(stack, admin, "mx.near.%s" % uuid.uuid4().hex[:6], "union_admin", org_code=NEAR)
    w["far_admin"] = staff_token(stack, admin, "mx.far.%s" % uuid.uuid4().hex[:6], "union_admin", org_code=FAR)
    mer = ok(call(stack, "POST", "/api/v1/merchants", admin, {"name": "面馆", "uscc": new_uscc(), "region_code": FAR}))
    emp = ok(call(stack, "POST", "/api/v1/employers", admin, {"name": "机械厂", "uscc": new_uscc(), "region_code": FAR,
                                                               "industry": "制造", "size": "small"}))
    w["merchant_id"], w["employer_id"] = mer["id"], emp["id"]
    w["merchant"] = staff_token(stack, admin, "mx.m.%s" % uuid.uuid4().hex[:6], "merchant", merchant_id=mer["id"])
    w["employer"] = staff_token(stack, admin, "mx.e.%s" % uuid.uuid4().hex[:6], "employer", employer_id=emp["id"])
    w["integrator"] = staff_token(stack, admin, "mx.i.%s" % uuid.uuid4().hex[:6], "integrator")
    w["far_account"] = ok(call(stack, "POST", "/api/v1/admin/accounts", admin, {
        "username": "mx.acc.%s" % uuid.uuid4().hex[:6], "password": "Far-Away-Passw0rd", "role": "union_admin",
        "org_code": FAR}))["id"]
    w["far_union"] = client.create_union(stack, admin, parent_code=FAR, auto_approve=False)
    w["near_union"] = client.create_union(stack, admin, parent_code=NEAR, auto_approve=True)
    # a pending member of the far union
    w["member"], pending, _ = client.new_member(stack, union_id=w["far_union"]["id"])
    w["far_member"] = pending["id"]
    # a pending transfer into the far union, by an active member of a near union
    mover, _, _ = client.new_member(stack, union_id=w["near_union"]["id"])
    w["far_transfer"] = ok(call(stack, "POST", "/api/v1/members/me/transfers", mover,
                                {"to_union_id": w["far_union"]["id"]}))["id"]
    w["far_announcement"] = ok(call(stack, "POST", "/api/v1/announcements", w["far_admin"], {
        "title": "通知", "body": "正文", "audience": {"region_codes": [FAR]}}))["id"]
    lat, lng = geo.place_in_county(random.Random(7), FAR)
    w["station_body"] = {"name": "服务站 %s" % uuid.uuid4().hex[:4], "kind": "outdoor", "region_code": FAR,
                         "address": "绵阳市涪城区1号", "location": {"lat": round(lat, 6), "lng": round(lng, 6)},
                         "opening_hours": [{"days": [1, 2, 3, 4, 5, 6, 7], "open": "00:00", "close": "23:59"}],
                         "amenities": ["water"]}
    w["far_station"] = ok(call(stack, "POST", "/api/v1/stations", admin, w["station_body"]))["id"]
    w["far_campaign"] = ok(call(stack, "POST", "/api/v1/campaigns", w["far_admin"], _campaign(w)))["id"]
    return w


def denied(r, codes=("OUT_OF_SCOPE",), statuses=(403,)):
    assert r.status_code in statuses, r.text
    assert r.json()["code"] in codes, r.text


def scoped_answer(r, far_keys):
    """A statistic in the caller's scope: 200, and nothing of the far county in it."""
    assert r.status_code == 200, r.text
    text = r.text
    assert not [k for k in far_keys if k in text], text


def _campaign(w):
    return {"title": "券", "merchant_id": w["merchant_id"], "face_value_cents": 100, "min_spend_cents": 0, "quota": 1,
            "per_member_limit": 1, "claim_starts_at": later(0), "claim_ends_at": later(1), "redeem_ends_at": later(2),
            "eligibility": {"region_codes": [], "occupation_groups": [], "union_ids": []}, "welcome": False}


# (method, path) -> what a county admin sends at the far county's object, and how the answer must look
SCOPE_CASES = {
    ("POST", "/api/v1/admin/accounts"): lambda s, w, t: denied(call(s, "POST", "/api/v1/admin/accounts", t, {
        "username": "mx.x.%s" % uuid.uuid4().hex[:6], "password": "Far-Away-Passw0rd", "role": "union_admin",
        "org_code": FAR})),
    ("POST", "/api/v1/admin/accounts/<account_id>/disable"): lambda s, w, t: denied(call(
        s, "POST", "/api/v1/admin/accounts/%s/disable" % w["far_account"], t)),
    ("POST", "/api/v1/unions"): lambda s, w, t: denied(call(s, "POST", "/api/v1/unions", t, {
        "name": "基层工会", "parent_id": "un_" + FAR, "uscc": new_uscc(), "auto_approve": True})),
    ("GET", "/api/v1/admin/members"): lambda s, w, t: denied(call(s, "GET", "/api/v1/admin/members", t, params={
        "union_id": w["far_union"]["id"]})),
    ("POST", "/api/v1/admin/members/<member_id>/approve"): lambda s, w, t: denied(call(
        s, "POST", "/api/v1/admin/members/%s/approve" % w["far_member"], t)),
    ("POST", "/api/v1/admin/members/<member_id>/reject"): lambda s, w, t: denied(call(
        s, "POST", "/api/v1/admin/members/%s/reject" % w["far_member"], t, {"reason": "材料不全"})),
    ("GET", "/api/v1/admin/transfers"): lambda s, w, t: denied(call(s, "GET", "/api/v1/admin/transfers", t, params={
        "union_id": w["far_union"]["id"]})),
    ("POST", "/api/v1/admin/transfers/<transfer_id>/approve"): lambda s, w, t: denied(call(
        s, "POST", "/api/v1/admin/transfers/%s/approve" % w["far_transfer"], t)),
    ("POST", "/api/v1/admin/transfers/<transfer_id>/reject"): lambda s, w, t: denied(call(
        s, "POST", "/api/v1/admin/transfers/%s/reject" % w["far_transfer"], t, {"reason": "不收"})),
    ("GET", "/api/v1/admin/stats/members"): lambda s, w, t: scoped_answer(call(
        s, "GET", "/api/v1/admin/stats/members", t, params={"group_by": "county", "status": "pending"}), [FAR]),
    ("POST", "/api/v1/merchants"): lambda s, w, t: denied(call(s, "POST", "/api/v1/merchants", t, {
        "name": "街角小店", "uscc": new_uscc(), "region_code": FAR})),
    ("POST", "/api/v1/campaigns"): lambda s, w, t: denied(call(s, "POST", "/api/v1/campaigns", t, _campaign(w))),
    ("GET", "/api/v1/admin/stats/benefits"): lambda s, w, t: scoped_answer(call(
        s, "GET", "/api/v1/admin/stats/benefits", t), [w["far_campaign"]]),
    ("POST", "/api/v1/employers"): lambda s, w, t: denied(call(s, "POST", "/api/v1/employers", t, {
        "name": "机械加工厂", "uscc": new_uscc(), "region_code": FAR, "industry": "制造", "size": "small"})),
    ("POST", "/api/v1/fairs"): lambda s, w, t: denied(call(s, "POST", "/api/v1/fairs", t, {
        "title": "招聘会", "kind": "onsite", "region_code": FAR, "venue": "体育馆", "starts_at": later(1),
        "ends_at": later(2)})),
    ("POST", "/api/v1/announcements"): lambda s, w, t: denied(call(s, "POST", "/api/v1/announcements", t, {
        "title": "通知", "body": "正文", "audience": {"region_codes": [FAR]}})),
    ("GET", "/api/v1/announcements/<announcement_id>"): lambda s, w, t: denied(call(
        s, "GET", "/api/v1/announcements/%s" % w["far_announcement"], t), ("OUT_OF_SCOPE", "NOT_FOUND"), (403, 404)),
    ("POST", "/api/v1/stations"): lambda s, w, t: denied(call(s, "POST", "/api/v1/stations", t,
                                                              dict(w["station_body"], name="站 %s" % uuid.uuid4().hex[:4]))),
    ("PATCH", "/api/v1/stations/<station_id>"): lambda s, w, t: denied(call(
        s, "PATCH", "/api/v1/stations/%s" % w["far_station"], t, {"status": "closed"})),
    ("GET", "/api/v1/admin/stats/stations"): lambda s, w, t: scoped_answer(call(
        s, "GET", "/api/v1/admin/stats/stations", t, params={"group_by": "county"}), [FAR]),
}


def concrete(path):
    """A path of the table with made-up ids (the role check comes before any lookup)."""
    import re
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: "x_%s" % m.group(1), path)


def role_routes():
    return [r for r in ROUTES if r.roles is not None]


def test_every_admin_route_has_a_scope_case():
    admin_routes = {(r.method, r.path) for r in role_routes() if "union_admin" in r.roles and r.path.startswith(
        "/api/") and r.path != "/api/v1/auth/logout"}
    missing = admin_routes - set(SCOPE_CASES)
    assert not missing, "add a scope case for these union_admin routes: %s" % sorted(missing)


@pytest.mark.parametrize("r", role_routes(), ids=lambda r: "%s %s" % (r.method, r.path))
def test_every_other_role_is_refused(stack, world, r):
    tokens = {"member": world["member"], "union_admin": world["near_admin"], "merchant": world["merchant"],
              "employer": world["employer"], "integrator": world["integrator"]}
    for role in ROLES:
        if role in r.roles:
            continue
        resp = call(stack, r.method, concrete(r.path), tokens[role], {} if r.method in ("POST", "PUT", "PATCH")
                    else None)
        assert resp.status_code == 403 and resp.json()["code"] == "FORBIDDEN", (role, resp.text)


@pytest.mark.parametrize("key", sorted(SCOPE_CASES), ids=lambda k: "%s %s" % k)
def test_a_county_admin_cannot_reach_another_county(stack, world, key):
    assert key in {(r.method, r.path) for r in ROUTES}, "%s %s is not a route any more" % key
    SCOPE_CASES[key](stack, world, world["near_admin"])

"""The gateway framework on its own: parsing, validation, auth and problem documents for bad input."""
import json

from marshmallow import fields
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway.framework import Route, Router
from unionhub_kit.schema import Page
from unionhub_kit import tokens
from unionhub_kit.schema import StrictInteger, StrictSchema


class Body(StrictSchema):
    name = fields.String(required=True)
    n = StrictInteger(required=True)


class NoRevocations:
    """Membership as the revocation list sees it: nothing revoked (the list itself: tests/e2e/test_security_e2e)."""

    def revocations_since(self, after=None):
        return []


class FakeGw:
    membership = NoRevocations()

    def __init__(self):
        self.rid = None

    def set_request_id(self, rid):
        self.rid = rid


def echo(gw, call):
    return {"body": call.body, "query": call.query, "actor": call.actor, "key": call.idempotency_key}


ROUTER = Router([
    Route("POST", "/things", echo, roles=("member",), body=Body, status=201, idempotent=True),
    Route("GET", "/things", echo, query=Page),
    Route("GET", "/open", echo),
])


def call(method, path, body=None, raw=None, headers=None, content_type="application/json", query=None):
    headers = dict(headers or {})
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    env = EnvironBuilder(method=method, path=path, data=data, headers=headers, query_string=query,
                         content_type=content_type if data is not None else None).get_environ()
    resp = ROUTER.dispatch(FakeGw(), Request(env))
    return resp.status_code, json.loads(resp.get_data() or b"null"), resp.headers


def auth(role="member"):
    return {"Authorization": "Bearer " + tokens.issue("u1", role)}


def test_valid_body_reaches_the_handler_with_the_actor():
    status, doc, headers = call("POST", "/things", {"name": "a", "n": 1}, headers=dict(auth(), **{
        "Idempotency-Key": "k-1", "X-Request-Id": "req-1"}))
    assert status == 201
    assert doc["body"] == {"name": "a", "n": 1} and doc["actor"]["sub"] == "u1" and doc["key"] == "k-1"
    assert headers["X-Request-Id"] == "req-1"


def check_problem(status, doc, headers, want_status, want_code):
    assert status == want_status, doc
    assert doc["code"] == want_code and doc["status"] == want_status and doc["title"]
    assert headers["Content-Type"].startswith("application/problem+json")


def test_malformed_json_array_string_unknown_missing_and_wrong_types():
    h = auth()
    check_problem(*call("POST", "/things", raw="{nope", headers=h), 400, "MALFORMED_JSON")
    check_problem(*call("POST", "/things", raw="[1, 2]", headers=h), 400, "VALIDATION_ERROR")
    check_problem(*call("POST", "/things", raw='"text"', headers=h), 400, "VALIDATION_ERROR")
    status, doc, hd = call("POST", "/things", {"name": "a", "n": 1, "extra": 1}, headers=h)
    check_problem(status, doc, hd, 400, "VALIDATION_ERROR")
    assert "extra" in doc["errors"]
    status, doc, hd = call("POST", "/things", {"name": "a"}, headers=h)
    assert "n" in doc["errors"]
    for bad in (1.5, "3", True):
        status, doc, hd = call("POST", "/things", {"name": "a", "n": bad}, headers=h)
        check_problem(status, doc, hd, 400, "VALIDATION_ERROR")


def test_oversized_and_non_json_bodies():
    check_problem(*call("POST", "/things", raw="x" * 70000, headers=auth()), 413, "PAYLOAD_TOO_LARGE")
    check_problem(*call("POST", "/things", raw="name=a", headers=auth(), content_type="text/plain"), 415,
                  "UNSUPPORTED_MEDIA_TYPE")


def test_missing_forged_expired_token_and_wrong_role():
    check_problem(*call("POST", "/things", {"name": "a", "n": 1}), 401, "UNAUTHORIZED")
    check_problem(*call("POST", "/things", {"name": "a", "n": 1}, headers={"Authorization": "Bearer x.y.z"}), 401,
                  "INVALID_TOKEN")
    expired = {"Authorization": "Bearer " + tokens.issue("u1", "member", ttl_seconds=-5)}
    check_problem(*call("POST", "/things", {"name": "a", "n": 1}, headers=expired), 401, "TOKEN_EXPIRED")
    check_problem(*call("POST", "/things", {"name": "a", "n": 1}, headers=auth("merchant")), 403, "FORBIDDEN")


def test_query_validation_limit_and_unknown_parameters():
    status, doc, _ = call("GET", "/things", query="limit=5")
    assert status == 200 and doc["query"]["limit"] == 5
    check_problem(*call("GET", "/things", query="limit=101"), 400, "VALIDATION_ERROR")
    check_problem(*call("GET", "/things", query="limit=abc"), 400, "VALIDATION_ERROR")
    check_problem(*call("GET", "/things", query="bogus=1"), 400, "VALIDATION_ERROR")
    check_problem(*call("GET", "/open", query="bogus=1"), 400, "VALIDATION_ERROR")


def test_unknown_route_and_method():
    check_problem(*call("GET", "/nothing"), 404, "NOT_FOUND")
    check_problem(*call("DELETE", "/things"), 405, "METHOD_NOT_ALLOWED")


def test_bad_idempotency_key_and_request_id_generation():
    check_problem(*call("POST", "/things", {"name": "a", "n": 1}, headers=dict(auth(), **{"Idempotency-Key": "x" * 200})),
                  400, "VALIDATION_ERROR")
    _, _, headers = call("GET", "/open", headers={"X-Request-Id": "bad id with spaces"})
    assert " " not in headers["X-Request-Id"] and len(headers["X-Request-Id"]) == 32

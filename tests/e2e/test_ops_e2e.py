"""Operations routes through the real gateway with every process started as `make run` starts them."""
import requests


def test_health_ready_and_documents(stack):
    assert requests.get(stack.url + "/healthz").json() == {"status": "ok"}
    r = requests.get(stack.url + "/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"broker": "ok", "membership": "ok", "benefits": "ok", "jobs": "ok", "notify": "ok",
                                  "stations": "ok"}
    spec = requests.get(stack.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    events = requests.get(stack.url + "/asyncapi.json").json()
    assert events["asyncapi"] == "3.0.0"
    assert "membership.member_joined" in events["channels"]
    assert "text/html" in requests.get(stack.url + "/docs").headers["Content-Type"]
    assert "unionhub_http_requests_total" in requests.get(stack.url + "/metrics").text


def test_request_id_echoed_or_generated_and_unknown_route_is_a_problem(stack):
    r = requests.get(stack.url + "/api/v1/nope", headers={"X-Request-Id": "abc-123"})
    assert r.status_code == 404
    assert r.headers["X-Request-Id"] == "abc-123"
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["code"] == "NOT_FOUND"
    r = requests.get(stack.url + "/healthz")
    assert len(r.headers["X-Request-Id"]) >= 16

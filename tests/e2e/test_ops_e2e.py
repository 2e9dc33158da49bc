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
    page = requests.get(stack.url + "/docs")
    assert "text/html" in page.headers["Content-Type"]
    # Swagger UI from the gateway itself, nothing from a CDN: /docs works without the internet
    assert "unpkg" not in page.text and "http" not in page.text.replace("/openapi.json", "")
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        r = requests.get(stack.url + "/docs/" + asset)
        assert r.status_code == 200 and len(r.content) > 10000, asset
    assert requests.get(stack.url + "/docs/..%2Fsecret").status_code == 404
    # metrics are not for the public: on the public port only with the scrape token
    assert requests.get(stack.url + "/metrics").status_code == 401
    r = requests.get(stack.url + "/metrics", headers={"Authorization": "Bearer " + stack.env["METRICS_TOKEN"]})
    assert r.status_code == 200 and "unionhub_http_requests_total" in r.text


def test_request_id_echoed_or_generated_and_unknown_route_is_a_problem(stack):
    r = requests.get(stack.url + "/api/v1/nope", headers={"X-Request-Id": "abc-123"})
    assert r.status_code == 404
    assert r.headers["X-Request-Id"] == "abc-123"
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["code"] == "NOT_FOUND"
    r = requests.get(stack.url + "/healthz")
    assert len(r.headers["X-Request-Id"]) >= 16

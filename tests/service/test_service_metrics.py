"""Service-side metrics (``unionhub_kit.metrics.ServiceMetrics``) on a real container, broker and store: entrypoint
latency and errors by outcome, the access log with the caller's request id, handler retries and dead letters, the
outbox backlog, and the per-process /metrics and /healthz endpoint."""
import logging
import re

import eventlet
import pytest
import requests
from unionhub_kit.rpc import rpc  # the services' own (AppError is an expected exception)
from nameko.testing.services import entrypoint_hook

from unionhub_kit import clock, events, logs, metrics, outbox, topology
from unionhub_kit.consumer import on_event
from unionhub_kit.errors import NotFound
from unionhub_kit.metrics import ServiceMetrics
from unionhub_kit.mongo import Mongo
from unionhub_kit.outbox import Outbox

MEMBER = {"member_id": "m1", "user_id": "u1", "union_id": "g1", "union_code": "5101040001", "region_code": "510104",
          "occupation_group": "courier", "status": "active", "card_no": "C1", "joined_at": "2026-01-01T00:00:00Z",
          "phone_masked": "138****5678"}


class Measured:
    name = "metricstest"
    db = Mongo()
    outbox = Outbox()
    metrics = ServiceMetrics()

    @rpc
    def work(self, kind):
        if kind == "missing":
            raise NotFound("no such thing")
        if kind == "boom":
            raise RuntimeError("boom")
        eventlet.sleep(0.02)
        return logs.get_request_id()

    @on_event("membership", "member_joined")
    def on_member_joined(self, event):
        raise RuntimeError("always fails")


@pytest.fixture(autouse=True)
def subscription():
    sub = topology.Subscription("metricstest", "on_member_joined", [("membership", "member_joined")])
    topology.SUBSCRIPTIONS.append(sub)
    yield
    topology.SUBSCRIPTIONS.remove(sub)


def sample(text, name, **labels):
    """The value of one sample in Prometheus text output (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_entrypoints_are_timed_counted_by_outcome_and_logged_with_the_request_id(container_factory, config, caplog,
                                                                                 db_of):
    # rows leased far into the future: the relay leaves them, so they are the backlog
    env = events.build("membership", "member_joined", MEMBER)
    db = db_of("metricstest")
    for _ in range(2):
        outbox.store(db, dict(env, id=events.build("membership", "member_joined", MEMBER)["id"]), "member_joined")
    db.outbox.update_many({}, {"$set": {"lease_until": clock.now().replace(year=2100)}})
    before = metrics.render().decode()
    c = container_factory(Measured, dict(config, METRICS_PORT=0))
    c.start()
    caplog.set_level(logging.INFO, logger="unionhub.access")
    caplog.set_level(logging.INFO, logger="nameko.containers")
    with entrypoint_hook(c, "work", context_data={"request_id": "req-metrics-42"}) as work:
        assert work("fine") == "req-metrics-42"  # the worker's own log lines carry the caller's request id
        with pytest.raises(NotFound):
            work("missing")
        with pytest.raises(RuntimeError):
            work("boom")
    text = metrics.render().decode()
    key = dict(service="metricstest", entrypoint="work", kind="rpc")
    count = lambda t, outcome: sample(t, "unionhub_entrypoint_seconds_count", outcome=outcome, **key)  # noqa: E731
    assert count(text, "ok") - count(before, "ok") == 1
    assert count(text, "client_error") - count(before, "client_error") == 1
    assert count(text, "error") - count(before, "error") == 1
    assert sample(text, "unionhub_entrypoint_seconds_sum", outcome="ok", **key) >= 0.02
    assert sample(text, "unionhub_entrypoint_errors_total", outcome="error", **key) >= 1
    assert sample(text, "unionhub_entrypoint_errors_total", outcome="ok", **key) == 0
    assert sample(text, "unionhub_outbox_backlog", service="metricstest") == 2
    assert sample(text, "unionhub_outbox_oldest_seconds", service="metricstest") > 0
    lines = [r for r in caplog.records if r.name == "unionhub.access"]
    assert [r.getMessage().split()[:3] for r in lines] == [["rpc", "metricstest.work", "ok"],
                                                            ["rpc", "metricstest.work", "client_error"],
                                                            ["rpc", "metricstest.work", "error"]]
    # nameko's own warning with the whole traceback for every client error (a 404, a 409 SOLD_OUT) is dropped: its
    # access line says it; the unexpected error is still logged with its traceback
    nameko_lines = [r for r in caplog.records if r.name == "nameko.containers"]
    assert not [r for r in nameko_lines if "expected" in str(r.msg)]
    assert [r.exc_info[0] for r in nameko_lines if r.levelno >= logging.ERROR] == [RuntimeError]


def test_handler_retries_and_dead_letters_are_exported(container_factory, config):
    c = container_factory(Measured, config)
    c.start()
    from nameko.standalone.events import event_dispatcher
    env = events.build("membership", "member_joined", MEMBER)
    event_dispatcher(config)("membership", "member_joined", env)
    labels = dict(service="metricstest", handler="on_member_joined")
    with eventlet.Timeout(20):
        while sample(metrics.render().decode(), "unionhub_event_dead_lettered_total", **labels) < 1:
            eventlet.sleep(0.1)
    text = metrics.render().decode()
    # EVENT_MAX_ATTEMPTS=3: two retries, then parked
    assert sample(text, "unionhub_event_retries_total", **labels) == 2
    assert sample(text, "unionhub_event_dead_lettered_total", **labels) == 1
    assert sample(text, "unionhub_entrypoint_errors_total", service="metricstest", entrypoint="on_member_joined",
                  kind="event", outcome="error") == 3


def test_metrics_port_serves_metrics_and_health(container_factory, config):
    port = metrics._server["port"] or metrics.serve(0 or _free_port())
    c = container_factory(Measured, config)
    c.start()
    r = requests.get("http://127.0.0.1:%d/metrics" % port, timeout=5)
    assert r.status_code == 200 and "unionhub_entrypoint_seconds" in r.text and "process_cpu_seconds_total" in r.text
    h = requests.get("http://127.0.0.1:%d/healthz" % port, timeout=5)
    assert h.status_code == 200 and "metricstest" in h.json()["services"]
    c.stop()
    h = requests.get("http://127.0.0.1:%d/healthz" % port, timeout=5).json()
    assert "metricstest" not in h["services"]
    assert requests.get("http://127.0.0.1:%d/nope" % port, timeout=5).status_code == 404


def _free_port():
    from deploy.stack import free_port
    return free_port()


def test_safe_path_hides_ids_and_codes():
    assert metrics.safe_path("/api/v1/coupons/AB12CD34/redeem") == "/api/v1/coupons/:x/redeem"
    assert metrics.safe_path("/api/v1/members/me/notifications") == "/api/v1/members/me/notifications"
    assert metrics.safe_path("/api/v1/jobs/job_65f0a1/applications") == "/api/v1/jobs/:x/applications"

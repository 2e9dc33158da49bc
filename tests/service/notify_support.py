"""Helpers for notify's service tests: its test config, publishing upstream events, a local HTTP receiver that
fails on demand, and waiting for a condition (no timed assertions: wait until true, or fail after a long bound)."""
import hashlib
import hmac
import time
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nameko.rpc import rpc
from nameko.standalone.events import event_dispatcher

from unionhub_kit import events
from unionhub_kit.errors import NotFound

WAIT = 20  # seconds before a wait gives up (a failure, not a timing assertion)


def notify_config(config, tmp_path, **extra):
    cfg = dict(config, SMS_SINK_FILE=str(tmp_path / "sms.jsonl"), PUSH_SINK_FILE=str(tmp_path / "push.jsonl"),
               NOTIFY_POLL_SECONDS=0.2, NOTIFY_MAX_ATTEMPTS=3, NOTIFY_RETRY_BASE_SECONDS=0.05,
               NOTIFY_RETRY_CAP_SECONDS=0.2, WEBHOOK_ALLOW_PRIVATE="1", WEBHOOK_MAX_ATTEMPTS=3,
               WEBHOOK_RETRY_BASE_SECONDS=0.05, WEBHOOK_RETRY_CAP_SECONDS=0.2, WEBHOOK_TIMEOUT_SECONDS=2)
    cfg.update(extra)
    return cfg


def publish(config, service, event, data, subject=None):
    """Publish an upstream event the way its service's outbox relay does; return the envelope."""
    env = events.build(service, event, data, subject=subject)
    event_dispatcher(config)(service, event, env)
    return env


def new_user():
    return "usr_%s" % uuid.uuid4().hex[:20]


class FakeMembership:
    """Membership's ``contact_phone`` for notify: the phones ``joined`` was given (events carry masked ones only)."""
    name = "membership"
    phones = {}

    @rpc
    def contact_phone(self, user_id):
        if user_id not in FakeMembership.phones:
            raise NotFound("No phone for this account.")
        return {"phone": FakeMembership.phones[user_id]}


def notify_container(container_factory, cfg):
    """A NotifyService container, with the fake membership it asks for phones (started, not yet notify)."""
    from services.notify.service import NotifyService
    container_factory(FakeMembership, cfg).start()
    return container_factory(NotifyService, cfg)


def joined(user_id, phone="13812345678", **kw):
    data = {"member_id": "mem_%s" % uuid.uuid4().hex[:12], "user_id": user_id, "union_id": "g1",
            "union_code": "5101040001", "region_code": "510104", "occupation_group": "courier", "status": "active",
            "card_no": "C%s" % uuid.uuid4().hex[:8].upper(), "joined_at": "2026-01-01T00:00:00.000Z",
            "phone_masked": phone[:3] + "****" + phone[-4:]}
    FakeMembership.phones[user_id] = phone
    data.update(kw)
    return data


def lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def signature_ok(req, secret):
    """A recorded request is signed as API.md's "Signed deliveries" says: HMAC-SHA256 of "<timestamp>." + body,
    with a timestamp of the last 5 minutes and a delivery id (checked here by hand, not with the kit's helper)."""
    headers = req["headers"]
    ts = headers.get("X-UnionHub-Timestamp", "")
    expected = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + req["body"], hashlib.sha256).hexdigest()
    return ts.isdigit() and abs(time.time() - int(ts)) <= 300 and bool(headers.get("X-UnionHub-Delivery")) and \
        hmac.compare_digest(expected, headers.get("X-UnionHub-Signature") or "")


class Receiver:
    """A local HTTP endpoint: records every POST; answers ``fail_status`` to the first ``fail_first`` of them
    (``fail_first=None``: to all of them), 200 afterwards."""

    def __init__(self, fail_first=0, fail_status=500):
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                failing = receiver.fail_first is None or len(receiver.requests) <= receiver.fail_first
                self.send_response(receiver.fail_status if failing else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/hook" % self.server.server_address[1]

    def json(self, i):
        return json.loads(self.requests[i]["body"])

    def close(self):
        self.server.shutdown()
        self.server.server_close()

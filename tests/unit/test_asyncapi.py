"""The AsyncAPI document lists every event any service dispatches.

The dispatch calls are read from the services' source (``outbox.add(session, "<event>", ...)``, the only way a
service publishes), so a new event without a catalogue schema fails here.
"""
import glob
import os
import re

from gateway import asyncapi

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISPATCH_RE = re.compile(r"""outbox\.add\(\s*\w+\s*,\s*(?:"([a-z_]+)"|'([a-z_]+)'|(\w+))""")
ANY_DISPATCH_RE = re.compile(r"outbox\.add\(")


def dispatched(root=ROOT):
    """{(service, event)} for every ``outbox.add(session, "<event>"`` in ``services/<service>/**/*.py``, and the
    number of ``outbox.add(`` calls seen (a call whose event name is not a literal fails: it could not be checked)."""
    found, calls = set(), 0
    for path in glob.glob(os.path.join(root, "services", "*", "**", "*.py"), recursive=True):
        service = os.path.relpath(path, os.path.join(root, "services")).split(os.sep)[0]
        with open(path, encoding="utf-8") as f:
            source = f.read()
        calls += len(ANY_DISPATCH_RE.findall(source))
        matches = DISPATCH_RE.findall(source)
        assert len(matches) == len(ANY_DISPATCH_RE.findall(source)), \
            "%s: an outbox.add( call this scan cannot read; write outbox.add(session, \"<event>\", ...)" % path
        for literal, quoted, variable in matches:
            if literal or quoted:
                found.add((service, literal or quoted))
            else:
                raise AssertionError("%s: outbox.add(session, %s, ...) must name its event literally" % (
                    path, variable))
    return found, calls


def test_every_dispatched_event_is_in_the_asyncapi_document():
    doc = asyncapi.build()
    events, calls = dispatched()
    assert calls > 0 and events, "no dispatch calls found: the scan is broken"
    assert ("notify", "notification_delivered") in events and ("notify", "notification_failed") in events
    missing = sorted("%s.%s" % e for e in events if "%s.%s" % e not in doc["channels"])
    assert not missing, "dispatched but not in /asyncapi.json (add them to unionhub_kit.catalog): %s" % missing
    for service, event in events:
        msg = doc["components"]["messages"]["%s_%s" % (service, event)]
        assert msg["payload"]["properties"]["data"]["properties"], "%s.%s has an empty data schema" % (service, event)


def test_the_scan_catches_an_event_without_a_schema(tmp_path):
    fake = tmp_path / "services" / "ghost"
    fake.mkdir(parents=True)
    (fake / "service.py").write_text('def f(self, session):\n    self.outbox.add(session, "ghost_appeared", {})\n')
    events, _ = dispatched(str(tmp_path))
    assert events == {("ghost", "ghost_appeared")}
    assert "ghost.ghost_appeared" not in asyncapi.build()["channels"]


def test_channels_carry_exchange_and_routing_key():
    doc = asyncapi.build()
    ch = doc["channels"]["notify.notification_failed"]
    assert ch["address"] == "notification_failed"
    assert ch["bindings"]["amqp"]["exchange"]["name"] == "notify.events"
    payload = doc["components"]["messages"]["notify_notification_failed"]["payload"]
    assert payload["properties"]["type"]["const"] == "org.unionhub.notify.notification_failed.v1"
    assert {"notification_id", "channel", "attempts", "error"} <= set(payload["properties"]["data"]["properties"])

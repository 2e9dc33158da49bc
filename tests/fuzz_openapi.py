"""``make fuzz``: schemathesis over the gateway's /openapi.json, without a token and with an admin token.

Starts its own stack as ``make run`` does (its own RabbitMQ vhost, its own store on a free port, development
environment), then runs ``schemathesis run`` twice with the checks ``not_a_server_error`` and
``response_schema_conformance``, bounded by ``FUZZ_EXAMPLES`` cases per operation (default 10) and ``FUZZ_SECONDS``
per run (default 600, a hard stop). Passes when both runs find 0 failures (no 5xx, no answer that breaks its
documented schema). Traffic goes to 127.0.0.1 only; webhook targets the fuzzer invents are refused by resolution
and validation, never delivered (WEBHOOK_ALLOW_PRIVATE stays off).
"""
import os
import subprocess
import sys
import tempfile
import time
import uuid

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("UNIONHUB_ENV", "development")

from deploy.stack import Stack, free_port  # noqa: E402
from unionhub_kit import topology  # noqa: E402

ADMIN_PASSWORD = "Fuzz-Admin-Passw0rd-%s" % uuid.uuid4().hex[:6]
RABBIT_API = "http://localhost:15672/api"
CHECKS = "not_a_server_error,response_schema_conformance"


def summary(path):
    """The run's summary (and its failures, shortened): the full output can be very long."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    cut = text.find("FAILURES")
    head = text[cut:cut + 4000] + "\n...\n" if cut >= 0 else ""
    return head + text[text.rfind("SUMMARY") - 40:] if "SUMMARY" in text else text[-3000:]


def main():
    examples = os.environ.get("FUZZ_EXAMPLES", "10")
    seconds = float(os.environ.get("FUZZ_SECONDS", "600"))
    vhost = "uh_fuzz_%s" % uuid.uuid4().hex[:8]
    guest = ("guest", "guest")
    requests.put("%s/vhosts/%s" % (RABBIT_API, vhost), auth=guest, timeout=10).raise_for_status()
    requests.put("%s/permissions/%s/guest" % (RABBIT_API, vhost), auth=guest, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    work = tempfile.mkdtemp(prefix="uh-fuzz-")
    port = free_port()
    env = {"AMQP_URI": "amqp://guest:guest@localhost:5672/%s" % vhost, "UNIONHUB_DB_PREFIX": "fuzz",
           "GATEWAY_PORT": str(port), "UNIONHUB_ADMIN_PASSWORD": ADMIN_PASSWORD, "LOG_LEVEL": "WARNING",
           "SMS_SINK_FILE": os.path.join(work, "sms.jsonl"), "PUSH_SINK_FILE": os.path.join(work, "push.jsonl"),
           "OTP_PER_ADDRESS_PER_HOUR": "100000"}
    stack = Stack(env, log_dir=os.path.join(work, "log"), say=lambda *a: None)
    failed = []
    try:
        stack.env["MONGO_URI"] = stack.start_store(os.path.join(work, "store"), free_port())
        topology.declare_uri(env["AMQP_URI"])
        stack.start_services()
        stack.wait_ready(180)
        url = stack.gateway_url()
        r = requests.post(url + "/api/v1/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD},
                          timeout=30)
        r.raise_for_status()
        admin = r.json()["access_token"]
        for label, headers in (("anonymous", []), ("admin", ["-H", "Authorization: Bearer %s" % admin])):
            cmd = [os.path.join(os.path.dirname(sys.executable), "schemathesis"), "run", url + "/openapi.json",
                   "--checks", CHECKS, "--max-examples", examples, "--phases", "examples,coverage,fuzzing",
                   "--workers", "1", "--request-timeout", "20", "--generation-database", "none", "--no-color",
                   "--seed", os.environ.get("FUZZ_SEED", "1010"), "--exclude-path", "/api/v1/auth/logout"] + headers
            print("\n== schemathesis, %s: %s cases per operation at most, %ss at most" % (label, examples, seconds))
            sys.stdout.flush()
            started = time.time()
            log = os.path.join(work, "schemathesis-%s.log" % label)
            with open(log, "w") as out:
                try:
                    code = subprocess.call(cmd, cwd=work, timeout=seconds, stdout=out, stderr=subprocess.STDOUT)
                except subprocess.TimeoutExpired:
                    out.write("\nstopped after %ss (the bound)\n" % seconds)
                    code = 1
            print(summary(log))
            print("== %s: exit %s in %.0fs (full output: %s)" % (label, code, time.time() - started, log))
            if code != 0:
                failed.append(label)
    finally:
        stack.stop()
        requests.delete("%s/vhosts/%s" % (RABBIT_API, vhost), auth=guest, timeout=10)
    if failed:
        sys.exit("fuzz: failures in the %s run(s); logs in %s" % (", ".join(failed), work))
    print("fuzz: 0 server errors, 0 response-schema violations (logs in %s)" % work)


if __name__ == "__main__":
    main()

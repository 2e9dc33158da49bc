"""Shared fixtures: the real RabbitMQ (a fresh vhost per test, from nameko's plugin) and a real SecantusDB process.

* ``store_uri`` (session): SecantusDB started as its own process on a free port (or ``TEST_MONGO_URI``).
* ``config``: a nameko config for in-process service tests: own vhost, own database prefix.
* ``stack`` (session): every process started the way ``make run`` starts them (see ``deploy/stack.py``), on its
  own vhost, database prefix and gateway port; ``stack.url`` is the gateway.
* ``make_stack``: the same for tests that kill or scale processes (their own, torn down after the test).
"""
import eventlet

eventlet.monkey_patch()  # nameko 2.14's plugin no longer does it; services run patched too

import os  # noqa: E402

# the tests run as development (the published development secret; never production): every process they start too
os.environ.setdefault("UNIONHUB_ENV", "development")
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from deploy.stack import Stack, free_port, mongo_ok, store_command  # noqa: E402

ADMIN_PASSWORD = "Admin-Test-Passw0rd"


def pytest_sessionstart(session):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("UNIONHUB_ENV=%s: the tests run as development (the published development secret)"
                            % os.environ["UNIONHUB_ENV"])


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory):
    given = os.environ.get("TEST_MONGO_URI")
    if given:
        yield given
        return
    port = free_port()
    data = tmp_path_factory.mktemp("store")
    log = open(os.path.join(str(data), "store.log"), "ab")
    proc = subprocess.Popen(store_command(data / "wt", port, cache_size="1G"), cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    uri = "mongodb://127.0.0.1:%d/?directConnection=true" % port
    for _ in range(200):
        if mongo_ok(uri, 300):
            break
        if proc.poll() is not None:
            raise RuntimeError("SecantusDB exited: %s" % open(log.name).read()[-2000:])
        time.sleep(0.1)
    yield uri
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def db_prefix():
    return "t%s" % uuid.uuid4().hex[:10]


@pytest.fixture
def config(rabbit_config, store_uri, db_prefix):
    return dict(rabbit_config, MONGO_URI=store_uri, DB_PREFIX=db_prefix, RPC_TIMEOUT=5, EVENT_MAX_ATTEMPTS=3,
                EVENT_RETRY_BASE_MS=50, max_workers=10, serializer="json")


@pytest.fixture
def mongo(store_uri):
    import pymongo
    client = pymongo.MongoClient(store_uri, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def db_of(mongo, config):
    """``db_of("membership")``: the database a service uses in this test."""
    from unionhub_kit.config import db_name
    return lambda service: mongo[db_name(service, config)]


class RunningStack:
    def __init__(self, stack, url, env, mongo_uri, prefix, log_dir):
        self.stack, self.url, self.env = stack, url, env
        self.mongo_uri, self.prefix, self.log_dir = mongo_uri, prefix, log_dir

    def db(self, service):
        import pymongo
        return pymongo.MongoClient(self.mongo_uri, tz_aware=True)["%s_%s" % (self.prefix, service)]

    def logs(self):
        out = []
        for name in sorted(os.listdir(self.log_dir)):
            with open(os.path.join(self.log_dir, name), encoding="utf-8", errors="replace") as f:
                out.append(f.read())
        return "\n".join(out)

    def sms_outbox(self):
        """Lines of the development SMS sink file (JSON per line)."""
        import json
        path = self.env["SMS_SINK_FILE"]
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


def _vhost(rabbit_manager, request):
    from urllib.parse import urlparse
    name = "uh_e2e_%s" % uuid.uuid4().hex[:8]
    rabbit_manager.create_vhost(name)
    user = urlparse(request.config.getoption("RABBIT_AMQP_URI")).username
    rabbit_manager.set_vhost_permissions(name, user, ".*", ".*", ".*")
    return name


def _start(request, rabbit_manager, store_uri, replicas=None, services=None, extra_env=None):
    vhost = _vhost(rabbit_manager, request)
    prefix = "e%s" % uuid.uuid4().hex[:8]
    port = free_port()
    log_dir = tempfile.mkdtemp(prefix="uh-logs-")
    env = {
        "AMQP_URI": "amqp://guest:guest@localhost:5672/%s" % vhost,
        "MONGO_URI": store_uri,
        "UNIONHUB_DB_PREFIX": prefix,
        "GATEWAY_PORT": str(port),
        "UNIONHUB_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "SMS_SINK_FILE": os.path.join(log_dir, "sms.jsonl"),
        "EVENT_RETRY_BASE_MS": "50",
        "EVENT_MAX_ATTEMPTS": "3",
        "RPC_TIMEOUT": "5",
        "LOG_LEVEL": "INFO",
        "WEBHOOK_ALLOW_PRIVATE": "1",
        # every test is one client (127.0.0.1) asking for hundreds of login codes; the limit itself is tested on a
        # stack of its own (tests/e2e/test_security_e2e.py)
        "OTP_PER_ADDRESS_PER_HOUR": "1000000",
        "METRICS_TOKEN": "test-scrape-token-%s" % uuid.uuid4().hex,
    }
    env.update(extra_env or {})
    stack = Stack(env, log_dir=log_dir, replicas=replicas, services=services, say=lambda *a: None)
    from unionhub_kit import topology
    topology.declare_uri(env["AMQP_URI"])
    stack.start_services()
    try:
        stack.wait_ready(120)
    except Exception:
        stack.stop()
        raise
    running = RunningStack(stack, "http://127.0.0.1:%d" % port, env, store_uri, prefix, log_dir)

    def cleanup():
        stack.stop()
        try:
            rabbit_manager.delete_vhost(vhost)
        except Exception:
            pass
    return running, cleanup


@pytest.fixture(scope="session")
def stack(request, rabbit_manager, store_uri):
    running, cleanup = _start(request, rabbit_manager, store_uri)
    yield running
    cleanup()


@pytest.fixture
def make_stack(request, rabbit_manager, store_uri):
    cleanups = []

    def make(mongo_uri=None, **kw):
        """``mongo_uri``: a store of the test's own (one it kills) instead of the session's."""
        running, cleanup = _start(request, rabbit_manager, mongo_uri or store_uri, **kw)
        cleanups.append(cleanup)
        return running
    yield make
    for c in cleanups:
        c()

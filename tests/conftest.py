"""Shared fixtures: the real RabbitMQ (a fresh vhost per test, from nameko's plugin) and a real SecantusDB process,
both through ``support.stack`` (what the benchmarks and chaos runs use too).

* ``store_uri`` (session): SecantusDB started by ``deploy/stack.py`` on a free port (or ``TEST_MONGO_URI``).
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
import sys  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from support import stack as support_stack  # noqa: E402
from support.stack import ADMIN_PASSWORD  # noqa: E402,F401  (the stacks' bootstrap admin)

# what every stack of the suite gets beyond support.stack's defaults: fast retries, a short RPC timeout
STACK_ENV = {
    "EVENT_RETRY_BASE_MS": "50",
    "EVENT_MAX_ATTEMPTS": "3",
    "RPC_TIMEOUT": "5",
    "LOG_LEVEL": "INFO",
    # every test is one client (127.0.0.1) asking for hundreds of login codes; the limit itself is tested on a
    # stack of its own (tests/e2e/test_security_e2e.py)
    "OTP_PER_ADDRESS_PER_HOUR": "1000000",
    "METRICS_TOKEN": "test-scrape-token-%s" % uuid.uuid4().hex,
}


def pytest_sessionstart(session):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("UNIONHUB_ENV=%s: the tests run as development (the published development secret)"
                            % os.environ["UNIONHUB_ENV"])


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory):
    """The session's store: SecantusDB started by deploy/stack.py (or ``TEST_MONGO_URI``)."""
    given = os.environ.get("TEST_MONGO_URI")
    if given:
        yield given
        return
    store = support_stack.Store(str(tmp_path_factory.mktemp("store")), cache_size="1G")
    yield store.uri
    store.stop()


@pytest.fixture
def db_prefix():
    return "t%s" % uuid.uuid4().hex[:10]


@pytest.fixture
def config(rabbit_config, store_uri, db_prefix):
    """The services' own container class validates and completes it (``unionhub_kit.config.Container``)."""
    return dict(rabbit_config, MONGO_URI=store_uri, DB_PREFIX=db_prefix, RPC_TIMEOUT=5, EVENT_MAX_ATTEMPTS=3,
                EVENT_RETRY_BASE_MS=50, max_workers=10, serializer="json",
                # the service tests read what a service emitted from its outbox (published rows kept); the end-to-end
                # tests and the benchmarks run as production does (rows deleted once published)
                OUTBOX_KEEP_PUBLISHED=True,
                SERVICE_CONTAINER_CLS="unionhub_kit.config.Container")


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


def _vhost(rabbit_manager, request):
    from urllib.parse import urlparse
    name = "uh_e2e_%s" % uuid.uuid4().hex[:8]
    rabbit_manager.create_vhost(name)
    user = urlparse(request.config.getoption("RABBIT_AMQP_URI")).username
    rabbit_manager.set_vhost_permissions(name, user, ".*", ".*", ".*")
    return name


def _start(request, rabbit_manager, store_uri, replicas=None, services=None, extra_env=None):
    """A ``support.stack.RunningStack`` on a vhost of the nameko plugin's broker and the session's store."""
    vhost = _vhost(rabbit_manager, request)
    try:
        running = support_stack.start(amqp_uri="amqp://guest:guest@localhost:5672/%s" % vhost, mongo_uri=store_uri,
                                      replicas=replicas, services=services, extra_env=dict(STACK_ENV, **extra_env or {}),
                                      log_dir=tempfile.mkdtemp(prefix="uh-logs-"))
    except Exception:
        rabbit_manager.delete_vhost(vhost)
        raise

    def cleanup():
        running.stop()
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

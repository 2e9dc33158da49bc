"""A running UnionHub stack for tests, benchmarks and chaos runs (see ``support/__init__.py``), ``wait_for`` and the
bootstrap admin's password."""
import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.parse
import uuid

import requests

from deploy.stack import Stack, ensure_rabbitmq, free_port
from unionhub_kit import config, topology

ADMIN_PASSWORD = "Admin-Test-Passw0rd"  # the stacks' UNIONHUB_ADMIN_PASSWORD (the bootstrap account ``admin``)


def wait_for(fn, timeout=20, every=0.05, what=None):
    """Call ``fn`` until it returns something true and return that; after ``timeout`` seconds an ``AssertionError``
    naming ``what``. (Under eventlet's monkey patch the sleep is a green one, so in-process services keep running.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("%s did not happen within %ss (last: %r)" % (what or "the condition", timeout, value))
        time.sleep(every)


# ---- the broker's management API and the store -------------------------------------------------------------------
def management(method, path, **kw):
    """A call to RabbitMQ's management API (``RABBIT_API_URI``); a missing thing to delete is not an error."""
    u = urllib.parse.urlparse(config.get("RABBIT_API_URI"))
    url = "%s://%s:%s/api/%s" % (u.scheme, u.hostname, u.port or 15672, path)
    r = requests.request(method, url, auth=(u.username or "guest", u.password or "guest"), timeout=15, **kw)
    if r.status_code >= 400 and not (method == "DELETE" and r.status_code == 404):
        r.raise_for_status()
    return r


def create_vhost(name, user="guest"):
    q = urllib.parse.quote(name, safe="")
    management("PUT", "vhosts/%s" % q)
    management("PUT", "permissions/%s/%s" % (q, urllib.parse.quote(user, safe="")),
               json={"configure": ".*", "write": ".*", "read": ".*"})


def delete_vhost(name):
    management("DELETE", "vhosts/%s" % urllib.parse.quote(name, safe=""))


class Store:
    """SecantusDB as its own process on a free port, started by ``deploy/stack.py`` as ``make run`` starts it."""

    def __init__(self, data_dir, log_dir=None, cache_size=None):
        self._stack = Stack(log_dir=log_dir or data_dir, say=lambda *a: None)
        self.uri = self._stack.start_store(os.path.join(data_dir, "wt"), free_port(), cache_size=cache_size)

    @property
    def process(self):
        return self._stack.store_proc

    def stop(self):
        self._stack.stop()


# ---- a running stack --------------------------------------------------------------------------------------------
class RunningStack:
    """``url`` (the gateway), ``env`` (what every process got), ``db(service)``, ``logs()``, ``sms_outbox()``;
    ``stack`` is the ``deploy.stack.Stack`` (to kill, scale or restart processes)."""

    def __init__(self, stack, env, vhost=None, store=None, tmp=None):
        self.stack, self.env = stack, env
        self.url = stack.gateway_url()
        self.amqp_uri, self.mongo_uri, self.prefix = env["AMQP_URI"], env["MONGO_URI"], env["UNIONHUB_DB_PREFIX"]
        self.log_dir = stack.log_dir
        self._vhost, self._store, self._tmp = vhost, store, tmp
        self._client = None

    @property
    def mongo(self):
        if self._client is None:
            import pymongo
            self._client = pymongo.MongoClient(self.mongo_uri, tz_aware=True, maxPoolSize=200)
        return self._client

    @property
    def store_process(self):
        """The store's process when this stack started one (else None: a given ``mongo_uri``)."""
        return self._store.process if self._store is not None else None

    def db(self, service):
        return self.mongo[config.db_name(service, {"DB_PREFIX": self.prefix})]

    def nameko_config(self, **extra):
        """A nameko config on this stack's broker vhost and store (for in-process proxies and services)."""
        return config.nameko_config(AMQP_URI=self.amqp_uri, MONGO_URI=self.mongo_uri, DB_PREFIX=self.prefix,
                                    **extra)

    def replicas(self):
        return {name: len(ps) for name, ps in self.stack.procs.items()}

    def logs(self):
        out = []
        for name in sorted(os.listdir(self.log_dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.log_dir, name), encoding="utf-8", errors="replace") as f:
                    out.append(f.read())
        return "\n".join(out)

    def sms_outbox(self):
        """Lines of the development SMS sink (JSON per line): where ``client`` reads login codes from."""
        path = self.env["SMS_SINK_FILE"]
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def stop(self):
        """Every process this stack started, then its store and vhost if it made them."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self.stack.stop()
        if self._store is not None:
            self._store.stop()
        if self._vhost:
            try:
                delete_vhost(self._vhost)
            except Exception:
                pass
        if self._tmp and not os.environ.get("SUPPORT_KEEP_LOGS"):
            shutil.rmtree(self._tmp, ignore_errors=True)


def start(amqp_uri=None, mongo_uri=None, replicas=None, services=None, extra_env=None, wait=120, log_dir=None,
          say=None, mongo_options=None):
    """Start every ``deploy/Procfile`` process (or ``services``; ``replicas={"notify": 2}``) and wait until the
    gateway is ready (when it runs); return a ``RunningStack``.

    Without ``amqp_uri`` a fresh vhost of the local broker (started if down) is made and deleted at ``stop``;
    without ``mongo_uri`` a store of its own is started (and stopped). ``extra_env`` adds to or overrides the
    environment every process gets; ``mongo_options`` (``"w=majority&journal=true"``) is added to the store's URI."""
    say = say or (lambda *a: None)
    tmp = None
    if log_dir is None:
        tmp = tempfile.mkdtemp(prefix="uh-stack-")
        log_dir = os.path.join(tmp, "log")
    os.makedirs(log_dir, exist_ok=True)
    vhost = store = None
    try:
        if not amqp_uri:
            if not ensure_rabbitmq(config.get("AMQP_URI"), say=say):
                raise RuntimeError("RabbitMQ is not available")
            vhost = "uh_stack_%s" % uuid.uuid4().hex[:8]
            create_vhost(vhost)
            base = urllib.parse.urlparse(config.get("AMQP_URI"))
            amqp_uri = base._replace(path="/" + vhost).geturl()
        if not mongo_uri:
            store = Store(os.path.join(tmp or log_dir, "store"), log_dir)
            mongo_uri = store.uri
        if mongo_options:
            mongo_uri += ("&" if "?" in mongo_uri else "?") + mongo_options
        env = {
            "AMQP_URI": amqp_uri,
            "MONGO_URI": mongo_uri,
            "UNIONHUB_DB_PREFIX": "s%s" % uuid.uuid4().hex[:8],
            "GATEWAY_PORT": str(free_port()),
            "UNIONHUB_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "SMS_SINK_FILE": os.path.join(log_dir, "sms.jsonl"),
            "WEBHOOK_ALLOW_PRIVATE": "1",
        }
        env.update(extra_env or {})
        stack = Stack(env, log_dir=log_dir, replicas=replicas, services=services, say=say)
        topology.declare_uri(amqp_uri)
        stack.start_services()
        running = RunningStack(stack, stack.env, vhost, store, tmp)
    except Exception:
        if store is not None:
            store.stop()
        if vhost:
            delete_vhost(vhost)
        raise
    if services is None or "gateway" in services:
        try:
            stack.wait_ready(wait)
        except Exception:
            running.stop()
            raise
    return running


@contextlib.contextmanager
def running(**kw):
    """``with stack.running(...) as st:`` ``start`` and, whatever happens, ``stop``."""
    st = start(**kw)
    try:
        yield st
    finally:
        st.stop()

"""Bring up the whole UnionHub stack as separate processes: used by ``make run`` and by the end-to-end tests.

* RabbitMQ: ``AMQP_URI`` if given, otherwise localhost (started with ``rabbitmq-server -detached`` if installed and
  down, with the management and consistent-hash exchange plugins enabled).
* Store: ``MONGO_URI`` if given, otherwise SecantusDB as its own process on a data directory that survives restarts.
* Services: every line of ``deploy/Procfile`` as its own process, ``<NAME>_REPLICAS`` copies each.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCFILE = os.path.join(ROOT, "deploy", "Procfile")


def procfile():
    entries = []
    with open(PROCFILE) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, cmd = line.split(":", 1)
                entries.append((name.strip(), cmd.strip()))
    return entries


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def amqp_ok(uri, timeout=3):
    from kombu import Connection
    try:
        with Connection(uri, connect_timeout=timeout) as c:
            c.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False


def ensure_rabbitmq(uri, say=print):
    """Use ``uri``; if it is the local default and RabbitMQ is down, start it. Return True when it answers."""
    if amqp_ok(uri):
        return True
    host = urllib.parse.urlparse(uri.replace("amqp://", "http://")).hostname
    if host not in ("localhost", "127.0.0.1"):
        say("RabbitMQ at %s does not answer." % uri)
        return False
    server = shutil.which("rabbitmq-server")
    if not server:
        say("RabbitMQ is not running and not installed. Install it (apt-get install rabbitmq-server) "
            "or set AMQP_URI to a broker.")
        return False
    say("starting RabbitMQ (rabbitmq-server -detached) ...")
    subprocess.call([server, "-detached"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(60):
        if amqp_ok(uri, 2):
            break
        time.sleep(1)
    else:
        say("RabbitMQ did not come up within a minute.")
        return False
    enable_management()
    return True


PLUGINS = ["rabbitmq_management", "rabbitmq_consistent_hash_exchange"]


def enable_management():
    """The plugins UnionHub uses: the management API (nameko's test fixtures, ``python -m unionhub_kit dlq``) and
    the consistent-hash exchange (``unionhub_kit.affinity``: a campaign's claims to one benefits replica; without it
    they take the shared RPC queue). Enabling an enabled plugin is a no-op."""
    plugins = shutil.which("rabbitmq-plugins")
    if plugins:
        subprocess.call([plugins, "enable"] + PLUGINS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mongo_ok(uri, timeout_ms=1000):
    import pymongo
    try:
        c = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms)
        c.admin.command("ping")
        c.close()
        return True
    except Exception:
        return False


def store_cache_size():
    """The embedded store's WiredTiger cache: ``STORE_CACHE_SIZE`` (``8G``, ``512M``), else a third of the machine's
    memory, at most 8G. The store's own default (1G) is far below the seed-scale working set (690,000 postings, about
    25M search-index entries): with it, loading thrashes in cache eviction (50,000 postings took over 12 minutes
    instead of 47 s with 8G). The cache is a ceiling, not an allocation."""
    given = os.environ.get("STORE_CACHE_SIZE")
    if given:
        return given
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "1G"
    return "%dM" % max(512, min(8192, total // 3 // (1 << 20)))


def store_command(data_dir, port, cache_size=None):
    """The embedded store's command line (``deploy/store.py``: SecantusDB with a short transaction lifetime and a
    reaper). ``--sync-on-commit``: a committed transaction is on disk before the client is told so (without it a
    kill -9 lost 1-35 of 900-2,600 acknowledged transactions, whatever their write concern)."""
    return [sys.executable, "-m", "deploy.store", "--storage-path", str(data_dir), "--port", str(port),
            "--host", "127.0.0.1", "--log-level", "WARNING", "--cache-size", cache_size or store_cache_size()] + (
        [] if os.environ.get("UNIONHUB_UNDURABLE_FOR_BENCH") == "1" else ["--sync-on-commit"])


class Stack:
    def __init__(self, env=None, log_dir=None, replicas=None, services=None, say=print):
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.env["PYTHONPATH"] = ROOT + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env.setdefault("PYTHONWARNINGS", "ignore")
        self.log_dir = log_dir or os.path.join(ROOT, "var", "log")
        os.makedirs(self.log_dir, exist_ok=True)
        self.replicas = replicas or {}
        self.only = services
        self.say = say
        self.procs = {}  # name -> [Popen]
        self.store_proc = None
        self.store_args = None

    # ---- store ------------------------------------------------------------------------------------------------
    def start_store(self, data_dir, port, cache_size=None):
        """SecantusDB on ``port`` with its data in ``data_dir`` (``cache_size``: see ``store_cache_size``)."""
        uri = "mongodb://127.0.0.1:%d/?directConnection=true" % port
        if mongo_ok(uri):
            self.say("store already answering on port %d" % port)
            return uri
        os.makedirs(data_dir, exist_ok=True)
        self.store_args = (data_dir, port)
        log = open(os.path.join(self.log_dir, "store.log"), "ab")
        self.store_proc = subprocess.Popen(store_command(data_dir, port, cache_size), cwd=ROOT, env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(120):
            if mongo_ok(uri, 500):
                return uri
            if self.store_proc.poll() is not None:
                raise RuntimeError("SecantusDB exited; see %s" % log.name)
            time.sleep(0.25)
        raise RuntimeError("SecantusDB did not answer on port %d" % port)

    # ---- services ---------------------------------------------------------------------------------------------
    def entries(self):
        return [(n, c) for n, c in procfile() if self.only is None or n in self.only]

    def start_service(self, name, index=0, extra_env=None):
        cmd = dict(procfile())[name]
        env = dict(self.env)
        env.update(extra_env or {})
        env["UNIONHUB_REPLICA"] = "%s-%d" % (name, index)
        exe_dir = os.path.dirname(sys.executable)
        env["PATH"] = exe_dir + os.pathsep + env.get("PATH", "")
        log = open(os.path.join(self.log_dir, "%s-%d.log" % (name, index)), "ab")
        # exec: the shell becomes nameko, so waiting for this process waits for the service itself
        p = subprocess.Popen("exec " + cmd, shell=True, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        ps = self.procs.setdefault(name, [])
        if index < len(ps):
            ps[index] = p  # a restart takes the place of the process it replaces
        else:
            ps.append(p)
        return p

    def start_services(self):
        for name, _ in self.entries():
            n = int(self.replicas.get(name) or self.env.get("%s_REPLICAS" % name.upper(), 1) or 1)
            for i in range(n):
                self.start_service(name, i)

    def kill(self, name, sig=signal.SIGKILL):
        for p in self.procs.pop(name, []):
            _signal_group(p, sig)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait()

    def gateway_url(self):
        return "http://127.0.0.1:%s" % self.env.get("GATEWAY_PORT", "8000")

    def wait_ready(self, timeout=90):
        url = self.gateway_url() + "/readyz"
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            for name, ps in self.procs.items():
                for p in ps:
                    if p.poll() is not None:
                        raise RuntimeError("%s exited with %s; see %s" % (name, p.returncode, self.log_dir))
            try:
                with urllib.request.urlopen(url, timeout=3) as r:
                    if r.status == 200:
                        return True
            except Exception as exc:
                last = exc
            time.sleep(0.3)
        raise RuntimeError("the stack was not ready after %ss: %s" % (timeout, last))

    def stop(self):
        for name in list(self.procs):
            for p in self.procs[name]:
                _signal_group(p, signal.SIGTERM)
        deadline = time.time() + 15
        for name in list(self.procs):
            for p in self.procs.pop(name):
                try:
                    p.wait(timeout=max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    pass
                _signal_group(p, signal.SIGKILL)  # whatever of its group is still there (never leave orphans)
                p.wait()
        if self.store_proc is not None:
            _signal_group(self.store_proc, signal.SIGTERM)
            try:
                self.store_proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _signal_group(self.store_proc, signal.SIGKILL)
            self.store_proc = None


class Supervisor:
    """What compose's ``restart: unless-stopped`` gives, for ``make run``: a process of the stack that exits is
    started again after a backoff (``base`` * 2^(n-1) s, at most ``cap``), and said so; when one crashes more than
    ``max_crashes`` times within ``window`` seconds, ``check`` answers why everything should stop."""

    def __init__(self, stack, window=60.0, max_crashes=5, base=0.5, cap=30.0, say=print, clock=time.monotonic):
        self.stack, self.window, self.max_crashes, self.base, self.cap = stack, window, max_crashes, base, cap
        self.say, self.clock = say, clock
        self.crashes = {}  # (name, index) -> times of its recent exits
        self.due = {}  # (name, index) -> when to start it again
        self.restarts = 0

    def _exited(self):
        for name, ps in list(self.stack.procs.items()):
            for i, p in enumerate(ps):
                if p.poll() is not None:
                    yield (name, i), p.returncode
        if self.stack.store_proc is not None and self.stack.store_proc.poll() is not None:
            yield ("store", 0), self.stack.store_proc.returncode

    def check(self):
        """One round: note the processes that exited, start those whose backoff is over; None, or why to stop."""
        now = self.clock()
        for key, code in self._exited():
            if key in self.due:
                continue
            times = [t for t in self.crashes.get(key, []) if now - t < self.window] + [now]
            self.crashes[key] = times
            if len(times) > self.max_crashes:
                return "%s-%d exited %d times within %.0f s" % (key[0], key[1], len(times), self.window)
            delay = min(self.cap, self.base * 2 ** (len(times) - 1))
            self.say("%s-%d exited (%s); starting it again in %.1f s (%d exit(s) in the last %.0f s)"
                     % (key[0], key[1], code, delay, len(times), self.window))
            self.due[key] = now + delay
        for key, at in sorted(self.due.items(), key=lambda kv: kv[1]):
            if now >= at:
                del self.due[key]
                if key[0] == "store":
                    self.stack.store_proc = None
                    self.stack.start_store(*self.stack.store_args)
                else:
                    self.stack.start_service(key[0], key[1])
                self.restarts += 1
                self.say("%s-%d started again" % key)
        return None


def _signal_group(p, sig):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

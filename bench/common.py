"""What every benchmark needs: a stack started the way the end-to-end tests start it, a concurrent load driver,
percentiles, tokens, and JSON result files.

The benchmark process is monkey-patched by eventlet (as nameko services and the test suite are): the load driver's
"threads" are green threads on keep-alive ``http.client`` connections, which leaves far more CPU to the server
processes than OS threads fighting over the GIL would.

    from bench import common
    with common.stack() as st:                       # RabbitMQ vhost + SecantusDB + every Procfile process
        res = common.http_load(lambda c, i: c.get("/api/v1/campaigns"), concurrency=32, duration=10)
        common.write_result("my_bench", {"campaigns": res})

Sizes come from the environment so ``make bench`` finishes in a few minutes (``BENCH_DURATION`` seconds per load
phase, ``BENCH_CONCURRENCY``; each benchmark documents its own). ``BENCH_MONGO_URI`` / ``BENCH_AMQP_URI`` point the
benchmarks at an existing store / broker instead of starting SecantusDB and a fresh vhost.
"""
import eventlet

eventlet.monkey_patch()

import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import uuid  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import requests  # noqa: E402

from support import client  # noqa: E402
from support import stack as stack_support  # noqa: E402
from unionhub_kit import broker, tokens  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "bench", "results")
import logging  # noqa: E402

logging.getLogger("amqp").setLevel(logging.ERROR)  # "Received method ... during closing channel" on proxy close


# ---- sizes from the environment ---------------------------------------------------------------------------------
def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def env_float(name, default):
    v = os.environ.get(name)
    return float(v) if v not in (None, "") else default


def duration(default=10.0):
    return env_float("BENCH_DURATION", default)


def concurrency(default=32):
    return env_int("BENCH_CONCURRENCY", default)


def say(*args):
    print(*args, file=sys.stderr, flush=True)


# ---- statistics -------------------------------------------------------------------------------------------------
def percentile(sorted_values, q):
    """Nearest-rank percentile of an already sorted list (``q`` in 0..100)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def percentiles(samples):
    """Latency summary in milliseconds of ``samples`` (seconds)."""
    s = sorted(samples)
    if not s:
        return {"n": 0, "mean_ms": None, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ms = lambda v: round(v * 1000.0, 3)  # noqa: E731
    return {"n": len(s), "mean_ms": ms(sum(s) / len(s)), "p50_ms": ms(percentile(s, 50)),
            "p95_ms": ms(percentile(s, 95)), "p99_ms": ms(percentile(s, 99)), "max_ms": ms(s[-1])}


# ---- concurrent drivers -----------------------------------------------------------------------------------------
def run_concurrent(call, concurrency=32, duration=None, total=None, setup=None, teardown=None, warmup=0.0):
    """Run ``call(state, i)`` from ``concurrency`` green threads until ``duration`` seconds or ``total`` calls.

    ``setup()`` makes each thread's ``state`` (a connection, a token ...). ``call`` returns a status (anything
    hashable; ``True``/2xx count as ok) or raises (counted as an error). Returns throughput, latency percentiles of
    every call and a count per status. ``warmup`` seconds of calls are made first and not counted.
    """
    if duration is None and total is None:
        raise ValueError("give duration or total")
    lat, statuses, errors = [], {}, []
    counter = [0]
    stop_at = [None]

    def worker():
        state = setup() if setup else None
        try:
            if warmup:
                end = time.perf_counter() + warmup
                while time.perf_counter() < end:
                    try:
                        call(state, -1)
                    except Exception:
                        pass
            while True:
                if total is not None:
                    if counter[0] >= total:
                        return
                    i = counter[0]
                    counter[0] += 1
                else:
                    i = counter[0]
                    counter[0] += 1
                    if time.perf_counter() >= stop_at[0]:
                        return
                t0 = time.perf_counter()
                try:
                    st = call(state, i)
                except Exception as exc:
                    st = "error:%s" % type(exc).__name__
                    if len(errors) < 5:
                        errors.append(repr(exc)[:300])
                lat.append(time.perf_counter() - t0)
                statuses[st] = statuses.get(st, 0) + 1
        finally:
            if teardown and state is not None:
                teardown(state)

    pool = eventlet.GreenPool(concurrency)
    started = time.perf_counter()
    stop_at[0] = started + (warmup or 0) + (duration or 0)
    threads = [pool.spawn(worker) for _ in range(concurrency)]
    for t in threads:
        t.wait()
    elapsed = time.perf_counter() - started - (warmup or 0)
    ok = sum(n for s, n in statuses.items() if s is True or (isinstance(s, int) and 200 <= s < 300))
    res = {"concurrency": concurrency, "requests": len(lat), "ok": ok, "elapsed_s": round(elapsed, 3),
           "per_s": round(len(lat) / elapsed, 1) if elapsed > 0 else None,
           "ok_per_s": round(ok / elapsed, 1) if elapsed > 0 else None,
           "status": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))}}
    res.update(percentiles(lat))
    if errors:
        res["sample_errors"] = errors
    return res


def sequential(call, n):
    """Latency of ``n`` calls one at a time (``call(i)``)."""
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        lat.append(time.perf_counter() - t0)
    res = percentiles(lat)
    res["per_s"] = round(len(lat) / sum(lat), 1) if lat else None
    return res


class Http:
    """A keep-alive HTTP/1.1 connection to the gateway (one per load thread)."""

    def __init__(self, base_url, token=None, timeout=30):
        u = urllib.parse.urlparse(base_url)
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self.token = token
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        """Return ``(status, parsed JSON or raw bytes)``."""
        h = {"Accept": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer %s" % self.token
        if body is not None:
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=h)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                break
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt:
                    raise
        ctype = resp.getheader("Content-Type", "")
        if "json" in ctype and data:
            try:
                return resp.status, json.loads(data)
            except ValueError:
                pass
        return resp.status, data

    def get(self, path, **kw):
        return self.request("GET", path, **kw)[0]

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)[0]

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn = None


def http_load(call, base_url, concurrency=32, duration=None, total=None, token=None, tokens=None, warmup=0.0):
    """``call(http, i)`` from ``concurrency`` keep-alive connections; ``tokens`` gives each connection its own."""
    it = iter(tokens) if tokens is not None else None

    def setup():
        return Http(base_url, token=next(it) if it is not None else token)
    return run_concurrent(call, concurrency=concurrency, duration=duration, total=total, setup=setup,
                          teardown=lambda h: h.close(), warmup=warmup)


# ---- tokens -----------------------------------------------------------------------------------------------------
def staff_token(role="union_admin", scope="51", **claims):
    """A staff token signed with this process's UNIONHUB_SECRET (the stack shares it)."""
    return tokens.issue("bench-%s" % uuid.uuid4().hex[:8], role, scope=scope, **claims)


def admin_token(st):
    """The bootstrap admin's token through the real login route."""
    return client.admin_token(st)


def new_members(st, n, concurrency=8, occupation_group="courier"):
    """``n`` active members the way the app makes them (OTP by SMS, token, join an auto-approve union), joined
    ``concurrency`` at a time; returns ``[(token, member_json, phone)]``. Needs membership and notify."""
    client.auto_union(st)
    out = []

    def one(_):
        out.append(client.new_member(st, occupation_group=occupation_group))
    pool = eventlet.GreenPool(concurrency)
    for i in range(n):
        pool.spawn_n(one, i)
    pool.waitall()
    return out


def rfc3339_in(seconds):
    import datetime
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def create_campaign(st, admin, quota=1000, per_member_limit=1, starts_in=-5, title=None, **extra):
    """A merchant (once per stack) and a live campaign through the gateway; returns the campaign JSON."""
    from support import client
    merchant = getattr(st, "_bench_merchant", None)
    if merchant is None:
        r = requests.post(st.url + "/api/v1/merchants", json={"name": "蜀味餐饮 bench", "uscc": client.new_uscc(),
                                                              "region_code": "510104"},
                          headers=client.auth(admin), timeout=15)
        assert r.status_code == 201, r.text
        merchant = st._bench_merchant = r.json()
    body = {"title": title or "午餐满30减10 %s" % uuid.uuid4().hex[:6], "merchant_id": merchant["id"],
            "face_value_cents": 1000, "min_spend_cents": 3000, "quota": quota, "per_member_limit": per_member_limit,
            "claim_starts_at": rfc3339_in(starts_in), "claim_ends_at": rfc3339_in(3600 * 24),
            "redeem_ends_at": rfc3339_in(3600 * 24 * 30), "eligibility": {}, "welcome": False}
    body.update(extra)
    r = requests.post(st.url + "/api/v1/campaigns", json=body, headers=client.auth(admin), timeout=15)
    assert r.status_code == 201, r.text
    return r.json()


# ---- the stack: support.stack, as the tests and chaos runs start it ----------------------------------------------
create_vhost, delete_vhost, mgmt = stack_support.create_vhost, stack_support.delete_vhost, stack_support.management


def start_store(data_dir, log_dir):
    """SecantusDB as its own process (``support.stack.Store``, as ``make run`` starts it); ``(uri, process)``."""
    store = stack_support.Store(data_dir, log_dir)
    return store.uri, store.process


def _bench_stack(replicas=None, services=None, extra_env=None, wait=180):
    """``support.stack.start``'s arguments with the benchmarks' settings: quiet logs, the broker / store of
    ``BENCH_AMQP_URI`` / ``BENCH_MONGO_URI`` when given (else a fresh vhost and a store of its own)."""
    # every benchmark client logs in from 127.0.0.1: the per-address login-code limit (a production guard against
    # one client spraying codes) would answer 429 after 20 logins, so benchmarks raise it as the test stack does
    env = {"LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"), "OTP_PER_ADDRESS_PER_HOUR": "100000000"}
    env.update(extra_env or {})
    journaled = "w=majority&journal=true" if os.environ.get("BENCH_JOURNALED") else None  # see run_all.py
    return dict(amqp_uri=os.environ.get("BENCH_AMQP_URI"), mongo_uri=os.environ.get("BENCH_MONGO_URI"),
                replicas=replicas, services=services, extra_env=env, wait=wait, say=say, mongo_options=journaled)


def start_stack(**kw):
    """A running stack for a benchmark (``stop()`` it); see ``_bench_stack``."""
    return stack_support.start(**_bench_stack(**kw))


def stack(**kw):
    """``with common.stack(...) as st:`` a running stack, stopped afterwards."""
    return stack_support.running(**_bench_stack(**kw))


def queue_depth(st, queue):
    """Messages ready + unacked in ``queue`` of the stack's vhost (management API)."""
    vhost = broker.vhost_of(st.amqp_uri)
    r = mgmt("GET", "queues/%s/%s" % (urllib.parse.quote(vhost, safe=""), urllib.parse.quote(queue, safe="")))
    return r.json().get("messages", 0) if r.ok else 0


# ---- CPU cost per request ----------------------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[2]), (int(rest[11]) + int(rest[12])) / _TICK  # pgrp, utime + stime
    except (OSError, IndexError, ValueError):
        return None, 0.0


def _rabbit_pid():
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if b"beam.smp" in f.read() and b"rabbit" in open("/proc/%s/cmdline" % pid, "rb").read():
                        return int(pid)
            except OSError:
                pass
    return None


def machine_cpu():
    """(busy, total) jiffies of the whole machine from /proc/stat (every process, the benchmark's own included)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def machine_busy(before, after):
    """Cores busy on the whole machine between two ``machine_cpu()`` readings (2.0 = both cores of these machines
    all the time), and the benchmark process's own share is in ``self_cpu``."""
    if not before or not after or after[1] == before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1), 3)


def self_cpu():
    """CPU seconds this (benchmark client) process has used."""
    t = os.times()
    return t.user + t.system


def opcounters(st):
    try:
        return dict(st.mongo.admin.command("serverStatus").get("opcounters") or {})
    except Exception:
        return None


class CpuMeter:
    """CPU seconds used by each process of a stack (services by process group, the store, RabbitMQ, this driver).

    The broker is shared with whatever else runs on the machine, so its figure is an upper bound."""

    def __init__(self, st, groups=None):
        self.groups = {}
        for name, procs in (st.stack.procs if groups is None else groups).items():
            for p in procs:
                self.groups.setdefault(name, []).append(p.pid)
        self.singles = {"client": os.getpid()}
        if st.store_process is not None:
            self.singles["store"] = st.store_process.pid
        rabbit = _rabbit_pid()
        if rabbit:
            self.singles["broker"] = rabbit

    def snapshot(self):
        by_group = {}
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                pgrp, cpu = _stat(pid)
                if pgrp is not None:
                    by_group[pgrp] = by_group.get(pgrp, 0.0) + cpu
        out = {name: sum(by_group.get(pg, 0.0) for pg in pgs) for name, pgs in self.groups.items()}
        for name, pid in self.singles.items():
            out[name] = _stat(pid)[1]
        return out

    @staticmethod
    def per_request(before, after, requests):
        """CPU milliseconds per request of each component between two snapshots."""
        if not requests:
            return {}
        return {k: round((after[k] - before.get(k, 0.0)) * 1000.0 / requests, 3) for k in after
                if after[k] - before.get(k, 0.0) > 0}


def measured_load(st, load, idle_seconds=3.0, groups=None):
    """Run ``load()`` (returns a ``run_concurrent`` result) and add ``cpu_ms_per_request`` by component.

    The CPU each component burns while idle (pollers; on a shared machine, other people's use of the broker) is
    measured for ``idle_seconds`` first and subtracted, so the figure is the marginal cost of one request."""
    meter = CpuMeter(st, groups)
    a, oa = meter.snapshot(), opcounters(st)
    time.sleep(idle_seconds)
    b, ob = meter.snapshot(), opcounters(st)
    t0 = time.perf_counter()
    res = load()
    elapsed = time.perf_counter() - t0
    c, oc = meter.snapshot(), opcounters(st)
    n = res.get("ok") or res.get("requests")
    if oa and ob and oc and n:  # store operations per request (what sizes a MongoDB primary)
        res["store_ops_per_request"] = {k: round(max(0.0, (oc[k] - ob[k]) - (ob[k] - oa[k]) / idle_seconds * elapsed)
                                                 / n, 2) for k in oc}
    idle = {k: (b[k] - a.get(k, 0.0)) / idle_seconds for k in b}
    res["cpu_ms_per_request"] = {k: round(max(0.0, (c[k] - b.get(k, 0.0)) - idle.get(k, 0.0) * elapsed)
                                          * 1000.0 / n, 3) for k in c if n} if n else {}
    res["cpu_idle_share"] = {k: round(v, 3) for k, v in idle.items() if v > 0.005}
    res["cpu_cores_busy"] = {k: round((c[k] - b.get(k, 0.0)) / elapsed, 3) for k in c}
    return res


# ---- results ----------------------------------------------------------------------------------------------------
def machine():
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def write_result(name, data):
    """Write ``bench/results/<name>.json`` (figures plus when and where) and return its path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    doc = {"benchmark": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
    doc.update(data)
    path = os.path.join(RESULTS_DIR, "%s.json" % name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False, default=str)
    os.replace(tmp, path)
    return path


def read_result(name):
    path = os.path.join(RESULTS_DIR, "%s.json" % name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def table(rows, headers):
    """A plain-text table."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)

"""The province at scale against an empty store, in one run: each request's p95 on the seed-scale store beside its
p95 on an empty one (``p95_ratio``), and how long a province-wide announcement takes to show in a sampled member's
inbox.

    make seed-scale SEED_ARGS="--users 250000 ..."     # once: the store this benchmark reads (see README)
    BENCH_SCALE_URI=mongodb://127.0.0.1:27517/?directConnection=true BENCH_SCALE_PREFIX=scale python -m bench.scale

The same stack (every service and the gateway, started as ``make run`` starts them) runs twice, side by side: on a
fresh empty store (a few members made through the app, a few announcements) and on the seed-scale store
(``BENCH_SCALE_URI``, databases ``BENCH_SCALE_PREFIX_*``; members sampled from the seeded ones, tokens minted for
them). Their phases take turns (otp on one, otp on the other, token on one ...: ``interleave``), so that a slower
minute of the machine does not fall on one store alone. Each phase runs ``BENCH_SCALE_SECONDS`` (8) at
``BENCH_SCALE_CONCURRENCY`` (8) connections:

* ``otp`` ``POST /auth/otp`` and ``token`` ``POST /auth/token`` (fresh phones: new users in a store of millions);
* ``join`` ``POST /members`` into a union that approves by hand, ``approve`` ``POST /admin/members/{id}/approve``;
* ``me`` ``GET /members/me``; ``member_list_deep`` ``GET /admin/members?limit=50`` following the cursor (pages 2-40 of
  the province admin's list); ``stats_members`` / ``stats_benefits``;
* ``inbox`` ``GET /members/me/notifications`` (own entries merged with a year of announcements at scale);
* ``claim`` ``POST /campaigns/{id}/claims`` on a live campaign.

Every phase runs ``BENCH_SCALE_PASSES`` (2) times on each stack: ``p95_ratio`` compares the last (warm) passes,
``cold_p95_ratio`` the first (the services and the store just started). Each phase also records the CPU ms per
request of every component (the seed-scale store's too, when it runs on this machine) and the store operations per
request. Writes ``bench/results/scale.json``: per phase the runs' figures and both ratios;
``announcement_visible_ms``: ``BENCH_SCALE_ANNOUNCEMENTS`` (3) samples per pass.

``BENCH_SCALE_PHASES`` (comma-separated, default every phase) runs only those phases and what they need (``token``
needs ``otp``'s phones, ``join`` its tokens, ``approve`` the joins); the announcement samples and the empty store's
campaigns only when a phase reads them. E.g. login alone against a store seeded ``--only membership``::

    BENCH_SCALE_PHASES=otp,token BENCH_SCALE_URI=... python -m bench.scale
"""
from bench import common  # noqa: I001  (monkey-patches first)

import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

from support import client  # noqa: E402
from unionhub_kit import regions, tokens  # noqa: E402

SECONDS = common.env_float("BENCH_SCALE_SECONDS", 8.0)
CONC = common.env_int("BENCH_SCALE_CONCURRENCY", 8)
PAGES = 40
ENV = {"OTP_PER_ADDRESS_PER_HOUR": "100000000", "LOGIN_MAX_FAILURES": "1000000", "STORE_TIMEOUT_MS": "15000",
       "RPC_TIMEOUT": "30"}  # both runs alike; a loaded machine starts six services on one store slowly


class Codes:
    """Login codes from the development SMS sink, read incrementally (the file grows during the run)."""

    def __init__(self, path):
        self.path, self.offset, self.codes = path, 0, {}

    def get(self, phone, wait=30):
        deadline = time.time() + wait
        while phone not in self.codes:
            if os.path.exists(self.path):
                with open(self.path, encoding="utf-8") as f:
                    f.seek(self.offset)
                    for line in f:
                        if line.endswith("\n"):
                            m = json.loads(line)
                            if m.get("template") == "otp":
                                self.codes[m["to"]] = m["params"]["code"]
                            self.offset += len(line.encode("utf-8"))
            if phone in self.codes:
                break
            if time.time() > deadline:
                raise RuntimeError("no code for %s" % phone)
            time.sleep(0.05)
        return self.codes.pop(phone)


ANNOUNCEMENT_SAMPLES = common.env_int("BENCH_SCALE_ANNOUNCEMENTS", 3)
ALL_PHASES = ("otp", "token", "join", "approve", "me", "member_list_deep", "stats_members", "stats_benefits", "inbox",
              "claim")
NEEDS = {"token": "otp", "join": "token", "approve": "join"}
MEMBER_PHASES = {"me", "inbox", "claim"}  # these act as the sampled members (seeded_members / empty_members)


def chosen_phases(spec=None):
    """The phases ``BENCH_SCALE_PHASES`` asks for, with the ones they need (``NEEDS``), in run order."""
    spec = os.environ.get("BENCH_SCALE_PHASES", "") if spec is None else spec
    asked = {p.strip() for p in spec.split(",") if p.strip()} or set(ALL_PHASES)
    unknown = asked - set(ALL_PHASES)
    if unknown:
        raise SystemExit("BENCH_SCALE_PHASES: unknown %s (phases: %s)" % (sorted(unknown), ",".join(ALL_PHASES)))
    for p in list(asked):
        while p in NEEDS:
            p = NEEDS[p]
            asked.add(p)
    return [p for p in ALL_PHASES if p in asked]


PHASES = chosen_phases()
ANNOUNCE = ANNOUNCEMENT_SAMPLES if len(PHASES) == len(ALL_PHASES) else 0  # the samples: only in a full run
SAMPLE_MEMBERS = bool(MEMBER_PHASES & set(PHASES)) or ANNOUNCE > 0


def store_pid(uri):
    """The process of the store at ``uri`` when it is this machine's ``deploy.store`` (its CPU is then measured too)."""
    port = (uri.split("//", 1)[-1].split("/", 1)[0].rsplit(":", 1) + ["27017"])[1]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if b"deploy.store" in args and b"--port" in args and args[args.index(b"--port") + 1] == port.encode():
                return int(pid)
    return None


def niceness(pid):
    """The nice values of every thread of ``pid`` (a set; empty when it cannot be read). ``renice -p PID`` changes
    only the thread it names, so each thread's is read."""
    out = set()
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                out.add(int(f.read().rsplit(")", 1)[1].split()[16]))
        except (OSError, IndexError, ValueError):
            pass
    return out


def check_priority(uri):
    """The seed-scale store should run at the priority the empty store runs at (the benchmark's own, as
    ``deploy/stack.py`` starts it). A store started under ``nice -n 19`` (as a seed may be) yields the CPU to
    every service of the stack whenever both cores are busy, so its p95 would partly measure the scheduler. Returns
    what was found, for the JSON, and says so loudly when they differ."""
    pid = store_pid(uri)
    if not pid:
        return {"pid": None, "note": "the seed-scale store does not run on this machine: its priority is not known"}
    found, own = sorted(niceness(pid)), os.nice(0)
    if found and found != [own]:
        common.say("scale: WARNING the seed-scale store (pid %d) runs at nice %s, this benchmark at %d: the two "
                   "stores are not compared alike (for each thread: renice -n %d -p TID, or restart the store "
                   "without nice)" % (pid, found, own, own))
    return {"pid": pid, "nice": found, "bench_nice": own, "alike": found == [own]}


def phase(st, name, call, tokens_=None, total=None):
    """One phase, with the CPU each component spent per request and the store operations per request (the store
    of a given URI included when it runs here: ``store_pid``)."""
    common.say("  %s ..." % name)
    groups = {k: list(v) for k, v in st.stack.procs.items()}
    pid = None if st.store_process is not None else store_pid(st.mongo_uri)
    if pid:
        groups["store"] = [type("P", (), {"pid": os.getpgid(pid)})()]
    return common.measured_load(st, lambda: common.http_load(
        call, st.url, concurrency=CONC, duration=None if total else SECONDS, total=total, tokens=tokens_),
        idle_seconds=2.0, groups=groups)


def run_on(st, members, label):
    """Every phase on ``st``; ``members``: ``[(token, user_id)]`` of existing active members. A generator: it
    yields after each phase (so that ``interleave`` can run the other store's same phase next) and returns the
    figures."""
    admin = client.admin_token(st)
    out = {}
    codes = Codes(st.env["SMS_SINK_FILE"])
    phones = []

    def otp(h, i):
        phone = client.new_phone()
        status = h.post("/api/v1/auth/otp", {"phone": phone})
        if status == 202:
            phones.append(phone)
        return status
    if "otp" in PHASES:
        out["otp"] = phase(st, "otp", otp)
        yield
    fresh = []

    def token(h, i):
        if i >= len(phones):
            return "no phone"
        status, body = h.request("POST", "/api/v1/auth/token", {"phone": phones[i], "code": codes.get(phones[i])})
        if status == 200:
            fresh.append(body["access_token"])
        return status
    if "token" in PHASES:
        out["token"] = phase(st, "token", token, total=len(phones))
        yield
    union = client.create_union(st, admin, auto_approve=False) if "join" in PHASES else None
    joined = []

    def join(h, i):
        h.token = fresh[i]
        status, body = h.request("POST", "/api/v1/members", {
            "name": "张三", "id_number": client.new_id_number(), "union_id": union["id"], "employer": "蜀道快递",
            "occupation_group": "courier", "consent": True})
        if status == 201:
            joined.append(body["id"])
        return status
    if "join" in PHASES:
        out["join"] = phase(st, "join", join, total=len(fresh))
        yield
    if "approve" in PHASES:
        out["approve"] = phase(st, "approve", lambda h, i: h.post("/api/v1/admin/members/%s/approve" % joined[i]),
                               tokens_=[admin] * CONC, total=len(joined))
        yield
    member_tokens = [t for t, _ in members]

    def as_member(path):
        def call(h, i):
            h.token = member_tokens[i % len(member_tokens)]
            return h.get(path)
        return call
    if "me" in PHASES:
        out["me"] = phase(st, "me", as_member("/api/v1/members/me"))
        yield

    def deep_page(h, i):
        """Each connection walks the province admin's list 50 at a time, ``PAGES`` pages deep, and again."""
        cursor, depth = getattr(h, "cursor", None), getattr(h, "depth", 0)
        status, body = h.request("GET", "/api/v1/admin/members?limit=50" + ("&cursor=%s" % cursor if cursor else ""))
        nxt = body.get("next_cursor") if status == 200 and isinstance(body, dict) else None
        h.cursor, h.depth = (nxt, depth + 1) if nxt and depth + 1 < PAGES else (None, 0)
        return status
    if "member_list_deep" in PHASES:
        out["member_list_deep"] = phase(st, "member_list_deep", deep_page, tokens_=[admin] * CONC)
        yield
    if "stats_members" in PHASES:
        out["stats_members"] = phase(st, "stats_members",
                                     lambda h, i: h.get("/api/v1/admin/stats/members?group_by=prefecture"),
                                     tokens_=[admin] * CONC)
        yield
    if "stats_benefits" in PHASES:
        out["stats_benefits"] = phase(st, "stats_benefits", lambda h, i: h.get("/api/v1/admin/stats/benefits"),
                                      tokens_=[admin] * CONC)
        yield
    if "inbox" in PHASES:
        out["inbox"] = phase(st, "inbox", as_member("/api/v1/members/me/notifications"))
        yield
    if "claim" in PHASES:
        campaign = common.create_campaign(st, admin, quota=10 ** 6, per_member_limit=100,
                                          title="scale claim %s" % uuid.uuid4().hex[:6])
        out["claim"] = phase(st, "claim", _claimer(campaign["id"], member_tokens))
        yield
    out["announcement_visible_ms"] = [announcement_visible(st, admin, members) for _ in range(ANNOUNCE)]
    for k, v in out.items():
        if isinstance(v, dict):
            common.say("  %-18s %s p50 %s p95 %s ms  %s/s  %s" % (label, k, v.get("p50_ms"), v.get("p95_ms"),
                                                                 v.get("per_s"), v.get("status")))
    return out


def _claimer(campaign_id, member_tokens):
    path = "/api/v1/campaigns/%s/claims" % campaign_id

    def call(h, i):
        h.token = member_tokens[i % len(member_tokens)]
        return h.post(path)
    return call


def announcement_visible(st, admin, members):
    """Milliseconds from ``POST /announcements`` (to the whole province) until a sampled member's inbox shows it."""
    token = random.choice(members)[0]
    h = common.Http(st.url, token=admin)
    started = time.perf_counter()
    status, body = h.request("POST", "/api/v1/announcements", {
        "title": "全省通知 %s" % uuid.uuid4().hex[:6], "body": "请全省会员注意。", "audience": {"region_codes": ["51"]}})
    assert status == 202, body
    m = common.Http(st.url, token=token)
    while True:
        status, page = m.request("GET", "/api/v1/members/me/notifications?limit=5")
        if status == 200 and any(i["id"] == body["id"] for i in page["items"]):
            break
        if time.perf_counter() - started > 60:
            return None
        time.sleep(0.02)
    elapsed = (time.perf_counter() - started) * 1000
    h.close()
    m.close()
    return round(elapsed, 1)


EMPTY_CAMPAIGNS = common.env_int("BENCH_SCALE_EMPTY_CAMPAIGNS", 21)
DEVICE_SHARE = 0.4  # services/notify/seed_scale.py: 40 % of the seeded active members have a device


def one_member_per_prefecture(st, admin):
    """A member in each of the 21 prefectures (an auto-approving union under its first county), so the province
    admin's member statistics by prefecture are 21 rows on the empty store as at scale. Without them the empty store
    answered with the one or two prefectures its members happened to join, and the ratio compared an answer of 21
    counters (read, sent by membership, checked and sent by the gateway) with one of 1-2: 1.6 against 1.0 ms of
    store CPU a request (capacity.md section 4, run 5)."""
    first_county = {}
    for c in regions.counties():
        first_county.setdefault(regions.prefecture_of(c["code"]), c["code"])
    for prefecture in regions.prefectures():
        union = client.create_union(st, admin, parent_code=first_county[prefecture["code"]], auto_approve=True)
        client.new_member(st, union_id=union["id"])


def empty_members(st, n=24):
    """Members made through the app on the empty store (``DEVICE_SHARE`` of them with a device registered, as many
    as the seed gives one), a few announcements and a page of campaigns (each only when a chosen phase reads it)."""
    admin = client.admin_token(st)
    made = common.new_members(st, n) if SAMPLE_MEMBERS else []
    for k, (token, _m, _p) in enumerate(made[:round(len(made) * DEVICE_SHARE)]):
        # the seed's share of members with the app (push on): a claim of theirs is also a push message to send,
        # on both stores alike (without it a claim at scale did ~2x the store operations of one on the empty store)
        d = common.Http(st.url, token=token)
        status, body = d.request("POST", "/api/v1/members/me/devices",
                                 {"platform": ("android", "ios")[k % 2], "token": "benchtok%06d%s" % (k, "x" * 24)})
        assert status == 201, body
        d.close()
    if "stats_members" in PHASES:
        one_member_per_prefecture(st, admin)
    h = common.Http(st.url, token=admin)
    for k in range(3 if "inbox" in PHASES or ANNOUNCE else 0):  # a few, as the inbox at scale has a year of them
        h.request("POST", "/api/v1/announcements", {"title": "通知 %d" % k, "body": "b",
                                                    "audience": {"region_codes": ["51"]}})
    h.close()
    for k in range(EMPTY_CAMPAIGNS if "stats_benefits" in PHASES else 0):  # a full page: 20 rows at scale, not 2
        common.create_campaign(st, admin, title="empty-store campaign %d" % k)
    return [(t, tokens.verify(t)["sub"]) for t, _m, _p in made]


def seeded_members(st, n=400):
    """Active seeded members (their projections exist in every service), with tokens minted for them."""
    if not SAMPLE_MEMBERS:
        return []
    db = st.db("notify")
    docs = list(db.members.find({"status": "active", "_id": {"$regex": "^usr_seed"}}, {"_id": 1}).limit(n * 5))
    docs = random.Random(7).sample(docs, min(n, len(docs)))
    return [(tokens.issue(d["_id"], "member"), d["_id"]) for d in docs]


PASSES = common.env_int("BENCH_SCALE_PASSES", 2)


def figures(r):
    """make bench's rows: each request's p95 at scale over its p95 on an empty store (warm), and the slowest
    province-wide announcement to show in a sampled inbox."""
    rows = [("scale: %s p95 at scale / empty (warm)" % k, v["p95_ratio"], "x") for k, v in r["phases"].items()]
    shown = [ms for ms in r["announcement_visible_ms"]["scale"] if ms is not None]
    rows.append(("scale: province announcement in a sampled inbox, slowest of %d" % len(shown),
                 max(shown) if shown else None, "ms"))
    return rows


FANOUT_WAIT = common.env_float("BENCH_SCALE_FANOUT_WAIT", 900.0)


def wait_fanouts(st):
    """Until no announcement is being fanned out (the samples' pushes to the whole province): a pass after this
    does not share the machine with the one before it, and the next run does not start with this one's fan-outs.
    ``{"seconds", "members"}``: how long that took and how many members the finished fan-outs counted."""
    db = st.db("notify")
    unfinished = {"status": {"$in": ["pending", "running"]}}
    ids = [d["_id"] for d in db.announcements.find(unfinished, {"_id": 1})]
    started = time.perf_counter()
    while db.announcements.count_documents(unfinished) and time.perf_counter() - started < FANOUT_WAIT:
        time.sleep(1.0)
    members = sum(d.get("scanned") or 0 for d in db.announcements.find({"_id": {"$in": ids}}, {"scanned": 1}))
    return {"announcements": len(ids), "seconds": round(time.perf_counter() - started, 1), "members": members,
            "left_unfinished": db.announcements.count_documents(unfinished)}


def interleave(runs):
    """Drive ``run_on`` generators phase by phase: one phase on each store in turn, the store that goes first
    alternating from one phase to the next. Run one store after the other (as before 2026-12-06 evening), the two
    halves were ten minutes apart and a drift of the machine's speed in between landed on one store only: with the
    same code a p95_ratio of a 25 ms request moved by +-0.5 from run to run. Returns each run's figures."""
    results, live, turn = [None] * len(runs), list(range(len(runs))), 0
    while live:
        order = live if turn % 2 == 0 else list(reversed(live))
        for i in order:
            try:
                next(runs[i])
            except StopIteration as done:
                results[i] = done.value
                live.remove(i)
        turn += 1
    return results


def passes(stacks):
    """``PASSES`` runs of every phase on each ``(stack, members, label)``, interleaved (``interleave``): the first
    on stores just opened (cold: the services' caches empty, the store's pages on disk), the last warm;
    ``[{"cold": ..., "warm": ..., "fanouts": ...}]`` in the order given. Before each pass, and after the last, the
    announcement fan-outs of both are waited for (``wait_fanouts``, recorded as ``fanouts``)."""
    fanouts = [[wait_fanouts(st)] for st, _m, _l in stacks]
    runs = [[] for _ in stacks]
    for k in range(PASSES):
        done = interleave([run_on(st, members, "%s pass %d" % (label, k + 1)) for st, members, label in stacks])
        for n, (st, _m, label) in enumerate(stacks):
            runs[n].append(done[n])
            fanouts[n].append(wait_fanouts(st))
            common.say("  %s: fan-outs %s" % (label, fanouts[n][-1]))
    return [{"cold": r[0], "warm": r[-1], "fanouts": f} for r, f in zip(runs, fanouts)]


def compare(empty, scale):
    rows, phases = [], {}
    for k in empty:
        if not isinstance(empty[k], dict):
            continue
        e, s = empty[k], scale[k]
        ratio = round(s["p95_ms"] / e["p95_ms"], 2) if e.get("p95_ms") and s.get("p95_ms") else None
        phases[k] = {"empty": e, "scale": s, "p95_ratio": ratio}
        rows.append([k, e.get("p95_ms"), s.get("p95_ms"), ratio, e.get("per_s"), s.get("per_s"),
                     _cpu(e), _cpu(s)])
    return phases, rows


def _cpu(r):
    """CPU ms per request, all components summed, and the store's share."""
    cpu = r.get("cpu_ms_per_request") or {}
    return "%.1f (store %.1f)" % (sum(v for k, v in cpu.items() if k not in ("client", "broker")), cpu.get("store", 0))


def main():
    uri, prefix = os.environ.get("BENCH_SCALE_URI"), os.environ.get("BENCH_SCALE_PREFIX", "scale")
    if not uri:
        raise SystemExit("BENCH_SCALE_URI: the store make seed-scale loaded")
    result = {"concurrency": CONC, "seconds_per_phase": SECONDS, "passes": PASSES, "phase_names": PHASES,
              "load_average_before": os.getloadavg(), "scale_store_priority": check_priority(uri)}
    common.say("scale: the empty store and the seed-scale store (%s, %s_*), side by side ..." % (uri, prefix))
    saved = os.environ.get("BENCH_MONGO_URI")
    with common.stack(extra_env=ENV) as empty_st:
        os.environ["BENCH_MONGO_URI"] = uri
        try:
            scale_cm = common.stack(extra_env=dict(ENV, UNIONHUB_DB_PREFIX=prefix))
            scale_st = scale_cm.__enter__()
        finally:
            if saved is None:
                os.environ.pop("BENCH_MONGO_URI", None)
            else:
                os.environ["BENCH_MONGO_URI"] = saved
        try:
            sizes = {s: scale_st.db(s).members.estimated_document_count() for s in ("membership", "benefits", "notify")}
            sizes["users"] = scale_st.db("membership").users.estimated_document_count()
            sizes["coupons"] = scale_st.db("benefits").coupons.estimated_document_count()
            sizes["inbox_entries"] = scale_st.db("notify").notifications.estimated_document_count()
            sizes["announcements"] = scale_st.db("notify").announcements.estimated_document_count()
            result["load_average_mid"] = os.getloadavg()
            empty, scale = passes([(empty_st, empty_members(empty_st), "empty"),
                                   (scale_st, seeded_members(scale_st), "scale")])
        finally:
            scale_cm.__exit__(None, None, None)
    result["load_average_after"] = os.getloadavg()
    result["scale_sizes"] = sizes
    # p95_ratio: warm against warm (the figure the issue asks for); cold_p95_ratio: the first pass of each
    result["phases"], rows = compare(empty["warm"], scale["warm"])
    cold, cold_rows = compare(empty["cold"], scale["cold"])
    for k, v in cold.items():
        result["phases"][k]["cold_p95_ratio"] = v["p95_ratio"]
        result["phases"][k]["cold"] = {"empty": v["empty"], "scale": v["scale"]}
    result["fanouts"] = {"empty": empty["fanouts"], "scale": scale["fanouts"]}
    result["announcement_visible_ms"] = {"empty": empty["warm"]["announcement_visible_ms"] +
                                         empty["cold"]["announcement_visible_ms"],
                                         "scale": scale["cold"]["announcement_visible_ms"] +
                                         scale["warm"]["announcement_visible_ms"]}
    # a run of some phases does not replace the full run's figures (make bench reads scale.json)
    common.write_result("scale" if len(PHASES) == len(ALL_PHASES) else "scale_" + "_".join(PHASES), result)
    headers = ["request", "empty p95 ms", "scale p95 ms", "p95_ratio", "empty /s", "scale /s", "empty CPU ms/req",
               "scale CPU ms/req"]
    print("warm (pass %d of each store):" % PASSES)
    print(common.table(rows, headers))
    print("cold (pass 1):")
    print(common.table(cold_rows, headers))
    print("province-wide announcement in a sampled inbox after (ms): empty %s, scale %s" % (
        result["announcement_visible_ms"]["empty"], result["announcement_visible_ms"]["scale"]))
    print("scale store: %s; load average %s -> %s -> %s" % (sizes, result["load_average_before"],
                                                             result["load_average_mid"], result["load_average_after"]))


if __name__ == "__main__":
    main()

"""A realistic UnionHub load for any deployment (locust), plus a 10:00 flash-grab spike.

locust is not a project dependency: ``pip install locust`` (in a separate virtualenv if you like), then

    locust -f bench/locustfile.py --host http://gateway.example:8000                  # the steady mix, web UI
    locust -f bench/locustfile.py --host ... --headless -u 500 -r 50 -t 10m          # headless
    GRAB_SHAPE=1 GRAB_CAMPAIGN_ID=cmp_... locust -f bench/locustfile.py --host ... --headless   # the spike shape

Members need tokens. Against a development stack (SMS to the sink file) make them first, which also joins each
one to a union so they can claim and apply:

    UNIONHUB_ADMIN_PASSWORD=... python bench/locustfile.py make-members --host http://127.0.0.1:8000 --count 200 \\
        --sms-sink var/log/sms.jsonl --out var/member-tokens.txt

and run locust with ``LOCUST_TOKENS=var/member-tokens.txt`` (one access token per line; against production, tokens
of test accounts minted by your identity team). Without tokens only the anonymous browsing users run.

The mix, per DESIGN.md's 500,000 daily users: most traffic is browsing (campaign list and detail, job search by
keyword and region, fairs, unions), members also claim coupons, read their coupons and inbox, save a resume and
apply to jobs. ``GrabShape`` (``GRAB_SHAPE=1``): a baseline, then at ``GRAB_AT`` seconds ``GRAB_USERS`` members
arrive within ``GRAB_RAMP`` seconds and claim ``GRAB_CAMPAIGN_ID`` as fast as they can for ``GRAB_HOLD`` seconds, then
the baseline again: the coupon grab at 10:00.
"""
import json
import os
import random
import sys
import time

KEYWORDS = ["外卖", "快递员", "焊工", "保安", "护工", "货车司机", "叉车", "厨师", "普工", "welding"]
REGIONS = ["51", "5101", "510104", "5107", "5113", "5115"]


def _tokens():
    path = os.environ.get("LOCUST_TOKENS")
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


try:
    from locust import HttpUser, LoadTestShape, between, constant, events, task
except ImportError:  # make-members and py_compile work without locust
    HttpUser = None

if HttpUser is not None:
    TOKENS = _tokens()
    _cache = {"campaigns": [], "jobs": [], "at": 0.0}

    def _refresh(client):
        """Live campaigns and open jobs to pick from (shared by the users of this worker, every 30 s)."""
        if time.time() - _cache["at"] < 30 and _cache["campaigns"]:
            return
        _cache["at"] = time.time()
        r = client.get("/api/v1/campaigns?status=live&limit=50", name="/api/v1/campaigns?status=live")
        if r.ok:
            _cache["campaigns"] = [c["id"] for c in r.json()["items"]]
        r = client.get("/api/v1/jobs?limit=50", name="/api/v1/jobs")
        if r.ok:
            _cache["jobs"] = [j["id"] for j in r.json()["items"]]

    class Browser(HttpUser):
        """Anyone with the app open: no login."""
        weight = 6
        wait_time = between(1, 5)

        def on_start(self):
            _refresh(self.client)

        @task(5)
        def campaigns(self):
            self.client.get("/api/v1/campaigns?status=live&region_code=%s" % random.choice(REGIONS),
                            name="/api/v1/campaigns?status=live&region_code=")

        @task(3)
        def campaign(self):
            if _cache["campaigns"]:
                self.client.get("/api/v1/campaigns/%s" % random.choice(_cache["campaigns"]),
                                name="/api/v1/campaigns/{id}")

        @task(5)
        def job_search(self):
            self.client.get("/api/v1/jobs?q=%s&region_code=%s" % (random.choice(KEYWORDS), random.choice(REGIONS)),
                            name="/api/v1/jobs?q=&region_code=")

        @task(2)
        def job(self):
            if _cache["jobs"]:
                self.client.get("/api/v1/jobs/%s" % random.choice(_cache["jobs"]), name="/api/v1/jobs/{id}")

        @task(1)
        def fairs(self):
            self.client.get("/api/v1/fairs?upcoming=true", name="/api/v1/fairs?upcoming=true")

        @task(1)
        def unions(self):
            self.client.get("/api/v1/unions?level=prefecture", name="/api/v1/unions?level=prefecture")

    class Member(HttpUser):
        """A logged-in member: browses, claims, reads coupons and inbox, applies to jobs."""
        weight = 3 if TOKENS else 0
        wait_time = between(2, 8)

        def on_start(self):
            self.token = random.choice(TOKENS)
            self.client.headers["Authorization"] = "Bearer %s" % self.token
            _refresh(self.client)
            self.client.put("/api/v1/members/me/resume", json={
                "name": "测试", "education": "high_school", "experience_years": 3, "skills": ["驾驶"],
                "desired_categories": ["4"], "desired_region_codes": ["510100"], "summary": "locust"},
                name="/api/v1/members/me/resume")

        @task(4)
        def campaigns(self):
            self.client.get("/api/v1/campaigns?status=live", name="/api/v1/campaigns?status=live")

        @task(2)
        def claim(self):
            if _cache["campaigns"]:
                with self.client.post("/api/v1/campaigns/%s/claims" % random.choice(_cache["campaigns"]),
                                      name="/api/v1/campaigns/{id}/claims", catch_response=True) as r:
                    if r.status_code in (201, 403, 409):  # sold out, limit reached, not eligible: answers
                        r.success()

        @task(2)
        def coupons(self):
            self.client.get("/api/v1/members/me/coupons", name="/api/v1/members/me/coupons")

        @task(3)
        def inbox(self):
            self.client.get("/api/v1/members/me/notifications?unread=true",
                            name="/api/v1/members/me/notifications")

        @task(2)
        def search(self):
            self.client.get("/api/v1/jobs?q=%s" % random.choice(KEYWORDS), name="/api/v1/jobs?q=")

        @task(1)
        def apply(self):
            if _cache["jobs"]:
                with self.client.post("/api/v1/jobs/%s/applications" % random.choice(_cache["jobs"]),
                                      name="/api/v1/jobs/{id}/applications", catch_response=True) as r:
                    if r.status_code in (201, 409):  # already applied / closed are answers
                        r.success()

    class Grabber(HttpUser):
        """A member at 10:00 hammering one campaign (only in the spike shape)."""
        weight = 0
        wait_time = constant(0.2)

        def on_start(self):
            self.client.headers["Authorization"] = "Bearer %s" % random.choice(TOKENS or [""])
            self.campaign = os.environ.get("GRAB_CAMPAIGN_ID") or (_cache["campaigns"] or [None])[0]

        @task
        def grab(self):
            if self.campaign:
                with self.client.post("/api/v1/campaigns/%s/claims" % self.campaign,
                                      name="GRAB /api/v1/campaigns/{id}/claims", catch_response=True) as r:
                    if r.status_code in (201, 409):
                        r.success()

    if os.environ.get("GRAB_SHAPE"):
        class GrabShape(LoadTestShape):
            """Baseline mix, then a flash crowd of grabbers, then the baseline again."""
            baseline = int(os.environ.get("GRAB_BASELINE_USERS", "200"))
            at = int(os.environ.get("GRAB_AT", "60"))
            users = int(os.environ.get("GRAB_USERS", "2000"))
            ramp = int(os.environ.get("GRAB_RAMP", "10"))
            hold = int(os.environ.get("GRAB_HOLD", "60"))
            total = int(os.environ.get("GRAB_TOTAL", "240"))

            def tick(self):
                t = self.get_run_time()
                if t > self.total:
                    return None
                if t < self.at:
                    return self.baseline, max(1, self.baseline // 10), [Browser, Member]
                if t < self.at + self.hold:
                    return self.baseline + self.users, max(1, self.users // max(1, self.ramp)), \
                        [Browser, Member, Grabber]
                return self.baseline, max(1, self.users // 10), [Browser, Member]

    @events.test_start.add_listener
    def _warn(environment, **kw):
        if not TOKENS:
            print("no LOCUST_TOKENS: only anonymous browsing users run", file=sys.stderr)


# ---- make-members: tokens for a development stack ----------------------------------------------------------------
def make_members(host, count, sms_sink, out, union_id=None):
    """Members via OTP (codes read from the development SMS sink) who join an auto-approve union."""
    import requests
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from unionhub_kit import ids
    s = requests.Session()
    if union_id is None:  # an auto-approve grassroots union under Jinjiang, created with the admin's password
        admin = os.environ.get("UNIONHUB_ADMIN_PASSWORD")
        if not admin:
            raise SystemExit("give --union-id of an auto-approve union, or set UNIONHUB_ADMIN_PASSWORD")
        r = s.post(host + "/api/v1/auth/token", json={"username": "admin", "password": admin}, timeout=15)
        r.raise_for_status()
        auth = {"Authorization": "Bearer " + r.json()["access_token"]}
        r = s.get(host + "/api/v1/unions?level=county&parent_code=510100&limit=100", timeout=15)
        r.raise_for_status()
        parent = [u for u in r.json()["items"] if u["code"] == "510104"][0]
        uscc = ids.make_uscc("91510104" + "%09d" % random.randrange(10 ** 9))
        r = s.post(host + "/api/v1/unions", json={"name": "压测基层工会", "parent_id": parent["id"], "uscc": uscc,
                                                  "auto_approve": True}, headers=auth, timeout=15)
        r.raise_for_status()
        union_id = r.json()["id"]
    tokens = []
    for n in range(count):
        phone = "1%d%09d" % (random.choice((3, 5, 7, 8, 9)), random.randrange(10 ** 9))
        seen = _sink_lines(sms_sink)
        s.post(host + "/api/v1/auth/otp", json={"phone": phone}, timeout=15).raise_for_status()
        code = None
        for _ in range(100):
            sent = [m for m in _sink_lines(sms_sink)[seen:] if m.get("to") == phone and m.get("template") == "otp"]
            if sent:
                code = sent[-1]["params"]["code"]
                break
            time.sleep(0.1)
        if code is None:
            raise SystemExit("no code in %s for %s" % (sms_sink, phone))
        r = s.post(host + "/api/v1/auth/token", json={"phone": phone, "code": code}, timeout=15)
        r.raise_for_status()
        token = r.json()["access_token"]
        birth = "%04d%02d%02d" % (random.randint(1970, 2000), random.randint(1, 12), random.randint(1, 28))
        body = {"name": "压测会员", "id_number": ids.make_resident_id("510104", birth, random.randrange(1000)),
                "union_id": union_id, "employer": "压测公司", "occupation_group": "delivery_rider", "consent": True}
        r = s.post(host + "/api/v1/members", json=body, headers={"Authorization": "Bearer " + token}, timeout=15)
        if r.status_code == 201:
            tokens.append(token)
    with open(out, "w") as f:
        f.write("\n".join(tokens) + "\n")
    print("%d member tokens in %s" % (len(tokens), out))


def _sink_lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "make-members":
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("cmd")
    p.add_argument("--host", default="http://127.0.0.1:8000")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--sms-sink", default="var/log/sms.jsonl")
    p.add_argument("--out", default="var/member-tokens.txt")
    p.add_argument("--union-id", help="an auto-approve union (default: create one; needs UNIONHUB_ADMIN_PASSWORD)")
    a = p.parse_args()
    make_members(a.host.rstrip("/"), a.count, a.sms_sink, a.out, a.union_id)

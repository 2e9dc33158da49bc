"""A service that is down is answered 503 at once; one that is up but does not answer in time is answered 504 with
the truth: the call may have been applied, retry with the same Idempotency-Key (and that retry gets the result of
the one call that was applied, never a second member)."""
import os
import signal
import time

import requests

from support.client import auth, member_token, new_id_number, auto_union


def test_no_consumer_is_503_at_once_and_a_stalled_service_is_an_honest_504(make_stack):
    s = make_stack()
    union = auto_union(s)
    token = member_token(s)

    # jobs is gone: no consumer on its RPC queue, so no 5 s wait for a 504
    s.stack.kill("jobs")
    time.sleep(1.5)  # the gateway's consumer check is cached for a second
    r = requests.get(s.url + "/api/v1/jobs", timeout=30)
    assert r.status_code == 503 and r.json()["code"] == "SERVICE_UNAVAILABLE", r.text
    assert "jobs" in r.json()["detail"]

    # membership is stopped (SIGSTOP): it still holds its queue, takes the join, and answers after the timeout
    body = {"name": "钱七", "id_number": new_id_number(), "union_id": union["id"], "employer": "川运物流",
            "occupation_group": "courier", "consent": True}
    headers = dict(auth(token), **{"Idempotency-Key": "stall-%d" % os.getpid()})
    (proc,) = s.stack.procs["membership"]
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        r = requests.post(s.url + "/api/v1/members", json=body, headers=headers, timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    assert r.status_code == 504 and r.json()["code"] == "SERVICE_TIMEOUT", r.text
    assert "may have been applied" in r.json()["detail"] and "Idempotency-Key" in r.json()["detail"]

    # the retry with the same key answers the one membership there is
    deadline = time.time() + 60
    while True:
        r = requests.post(s.url + "/api/v1/members", json=body, headers=headers, timeout=30)
        if r.status_code == 201 or time.time() > deadline:
            break
        assert r.status_code in (503, 504), r.text
        time.sleep(0.5)
    assert r.status_code == 201, r.text
    db = s.db("membership")
    user_id = db.members.find_one({"_id": r.json()["id"]})["user_id"]
    assert [m["_id"] for m in db.members.find({"user_id": user_id})] == [r.json()["id"]]

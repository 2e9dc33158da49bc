"""The logs of an end-to-end run: the request id travels from the gateway through RPC and events into the services'
log lines, and no resident ID number, phone number, login code or token is ever written."""
import json
import os
import re
import time
import uuid

import pytest
import requests

from support import client
from support.stack import wait_for

pytestmark = pytest.mark.e2e


def log_lines(stack, process):
    """Parsed JSON lines of every replica of ``process``."""
    out = []
    for name in sorted(os.listdir(stack.log_dir)):
        if name.startswith(process + "-") and name.endswith(".log"):
            with open(os.path.join(stack.log_dir, name), encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    return out


def process_logs(stack):
    """Everything the processes wrote (``*.log``; not the development SMS sink, which stands for the phone)."""
    assert len([name for name in os.listdir(stack.log_dir) if name.endswith(".log")]) >= 5
    return stack.logs()


def test_request_id_is_carried_and_secrets_never_logged(stack):
    rid = "logtest-%s" % uuid.uuid4().hex
    hdr = {"X-Request-Id": rid}
    phone = client.new_phone()
    id_number = client.new_id_number()

    # identity: an OTP by SMS (membership -> notify by RPC), a wrong code, then the right one
    before = len(stack.sms_outbox())
    r = requests.post(stack.url + "/api/v1/auth/otp", json={"phone": phone}, headers=hdr, timeout=15)
    assert r.status_code == 202, r.text
    code = client.otp_code(stack, phone, after=before)
    wrong = "%06d" % ((int(code) + 1) % 10 ** 6)
    r = requests.post(stack.url + "/api/v1/auth/token", json={"phone": phone, "code": wrong}, headers=hdr, timeout=15)
    assert r.status_code == 401
    r = requests.post(stack.url + "/api/v1/auth/token", json={"phone": phone, "code": code}, headers=hdr, timeout=15)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]

    # join with a request id: membership writes the member and its event; notify and benefits react to the event
    union = client.auto_union(stack)
    body = {"name": "李四", "id_number": id_number, "union_id": union["id"], "employer": "蜀道快递有限公司",
            "occupation_group": "courier", "consent": True}
    r = requests.post(stack.url + "/api/v1/members", json=body, headers=dict(hdr, **client.auth(token)), timeout=15)
    assert r.status_code == 201, r.text
    # the same ID number again (a 409), an invalid one (a 400), a forged token (a 401): error paths log too
    r = requests.post(stack.url + "/api/v1/members", json=body, headers=dict(hdr, **client.auth(token)), timeout=15)
    assert r.status_code == 409
    bad = dict(body, id_number=id_number[:-1] + ("0" if id_number[-1] != "0" else "1"))
    r = requests.post(stack.url + "/api/v1/members", json=bad, headers=dict(hdr, **client.auth(token)), timeout=15)
    assert r.status_code in (400, 409)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    r = requests.get(stack.url + "/api/v1/members/me", headers=dict(hdr, **client.auth(forged)), timeout=15)
    assert r.status_code == 401
    r = requests.get(stack.url + "/api/v1/members/me", headers=dict(hdr, **client.auth(token)), timeout=15)
    assert r.status_code == 200 and id_number not in r.text

    # the welcome message reaches the inbox (the event went through notify)
    def inbox():
        r = requests.get(stack.url + "/api/v1/members/me/notifications", headers=client.auth(token), timeout=15)
        return r.status_code == 200 and r.json()["items"]
    assert wait_for(inbox), "no welcome message"
    time.sleep(1.5)  # let every process flush its last lines

    text = process_logs(stack)
    assert id_number not in text and id_number.lower() not in text
    assert phone not in text
    for c in (code, wrong):
        assert not re.search(r"(?<![0-9])%s(?![0-9])" % c, text), "a login code was logged"
    assert token not in text and forged not in text
    assert token.split(".")[2] not in text  # not even the signature part
    assert not re.search(r"eyJ[A-Za-z0-9_\-]{10,}\.", text), "something that looks like a JWT was logged"

    # the request id is in the gateway's lines and in the lines of the services the request reached
    for process in ("gateway", "membership", "notify"):
        lines = [doc for doc in log_lines(stack, process) if doc.get("request_id") == rid]
        assert lines, "no %s log line carries the request id" % process
    # notify saw it twice: the OTP SMS (RPC from membership) and the member_joined event (through the broker)
    notify_lines = [d["msg"] for d in log_lines(stack, "notify") if d.get("request_id") == rid]
    assert any(m.startswith("rpc notify.send_sms") for m in notify_lines), notify_lines
    assert any(m.startswith("event notify.on_member_joined") for m in notify_lines), notify_lines

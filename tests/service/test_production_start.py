"""UNIONHUB_ENV=production without a proper UNIONHUB_SECRET: every process of the Procfile (the gateway too) exits at
start with a one-line reason; with a proper one it starts (development, the tests' own mode, is the rest of the suite)."""
import os
import subprocess
import sys
import time

import pytest

from deploy.stack import ROOT, procfile
from unionhub_kit import keys

BAD = {
    "unset": None,
    "development value": keys.DEV_SECRET,
    "too short": "s3cret-but-only-24-chars",
    "placeholder": "CHANGE-ME-at-least-32-random-bytes",
}


def start(cmd, secret, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIONHUB_")}
    env.update(UNIONHUB_ENV="production", PYTHONWARNINGS="ignore", AMQP_URI="amqp://guest:guest@127.0.0.1:1/",
               MONGO_URI="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200", GATEWAY_PORT="0")
    env.update(extra)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    if secret is not None:
        env["UNIONHUB_SECRET"] = secret
    return subprocess.Popen(cmd, shell=True, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def test_every_process_refuses_to_start_without_a_proper_secret():
    runs = [(name, why, start(cmd, secret)) for name, cmd in procfile() for why, secret in BAD.items()
            if why == "unset" or name == "gateway"]
    for name, why, p in runs:
        out, err = p.communicate(timeout=120)
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert p.returncode == 1, (name, why, p.returncode, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("unionhub: the %s service refuses to start in production: "
                                                       % name), (name, why, err[-2000:])


@pytest.mark.parametrize("env", [{"UNIONHUB_ENV": "staging"}])
def test_an_unknown_environment_is_refused(env):
    p = start(dict(procfile())["gateway"], "a-proper-secret-of-forty-characters-0000", **env)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1 and "UNIONHUB_ENV='staging'" in err


def test_a_proper_secret_passes_the_check():
    """Past the check the process goes on to its broker (here none: it keeps trying), so it is still running."""
    p = start(dict(procfile())["gateway"], "a-proper-secret-of-forty-characters-0000")
    try:
        time.sleep(8)
        assert p.poll() is None, p.communicate()[1][-2000:]
    finally:
        os.killpg(p.pid, 9)
        p.wait()

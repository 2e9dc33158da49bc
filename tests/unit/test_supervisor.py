"""``make run``'s supervisor on real (tiny) processes: a process that exits is started again after a backoff, and a
process that keeps crashing stops everything."""
import subprocess
import sys

from deploy.stack import Supervisor


class FakeStack:
    """Stands in for ``deploy.stack.Stack``: its "services" are Python one-liners."""

    def __init__(self, code):
        self.code = code
        self.procs = {}
        self.store_proc = None
        self.started = []

    def start_service(self, name, index=0):
        p = subprocess.Popen([sys.executable, "-c", self.code])
        ps = self.procs.setdefault(name, [])
        ps[index:index + 1] = [p]
        self.started.append((name, index))
        return p


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_crashed_process_is_started_again_after_a_backoff():
    stack, clock, said = FakeStack("import sys; sys.exit(3)"), Clock(), []
    stack.start_service("notify", 0)
    stack.procs["notify"][0].wait()
    sup = Supervisor(stack, base=1.0, clock=clock, say=said.append)
    assert sup.check() is None and "notify-0 exited (3)" in said[0] and "1.0 s" in said[0]
    assert stack.started == [("notify", 0)]  # not yet: the backoff
    clock.now = 1.0
    assert sup.check() is None
    assert stack.started == [("notify", 0), ("notify", 0)] and sup.restarts == 1
    stack.procs["notify"][0].wait()
    clock.now = 2.0
    sup.check()
    assert "2.0 s" in said[-1]  # the second crash within the window waits twice as long


def test_repeated_crashes_within_the_window_stop_everything():
    stack, clock = FakeStack("import sys; sys.exit(1)"), Clock()
    stack.start_service("membership", 0)
    sup = Supervisor(stack, window=60, max_crashes=3, base=0.0, clock=clock, say=lambda m: None)
    why = None
    for step in range(10):
        stack.procs["membership"][0].wait()
        clock.now = step
        why = sup.check() or sup.check()
        if why:
            break
    assert why and "membership-0 exited 4 times" in why


def test_a_process_that_runs_is_left_alone():
    stack = FakeStack("import time; time.sleep(30)")
    stack.start_service("jobs", 0)
    try:
        sup = Supervisor(stack, say=lambda m: None)
        assert sup.check() is None and sup.restarts == 0 and stack.started == [("jobs", 0)]
    finally:
        stack.procs["jobs"][0].kill()

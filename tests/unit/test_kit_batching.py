"""unionhub_kit.batching.GroupCommit with green threads and a recording ``run`` (no broker, no store)."""
import eventlet
import pytest

from unionhub_kit.batching import GroupCommit


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_answer():
    seen = []

    def run(key, items):
        seen.append((key, list(items)))
        eventlet.sleep(0.01)  # a commit takes a while: later requests gather for the next batch
        return [i * 10 if i % 3 else ValueError("refused %d" % i) for i in items]
    group = GroupCommit(run, window=0.005)
    answers = {}

    def one(i):
        try:
            answers[i] = group.submit("c1", i)
        except ValueError as exc:
            answers[i] = str(exc)
    pool = eventlet.GreenPool()
    for i in range(1, 40):
        pool.spawn(one, i)
        if i % 10 == 0:
            eventlet.sleep(0.004)
    pool.waitall()
    assert answers == {i: (i * 10 if i % 3 else "refused %d" % i) for i in range(1, 40)}
    assert sorted(i for _, items in seen for i in items) == list(range(1, 40))  # each request once
    assert len(seen) < 10 and group.batches == len(seen) and group.items == 39
    assert not group._pending and not group._leaders  # nothing left waiting, no leader left behind


def test_keys_are_batched_apart_and_a_failing_batch_fails_each_of_its_requests():
    def run(key, items):
        if key == "bad":
            raise RuntimeError("store fell over")
        return [(key, i) for i in items]
    group = GroupCommit(run, window=0.002)
    out = {}

    def one(key, i):
        try:
            out[(key, i)] = group.submit(key, i)
        except RuntimeError as exc:
            out[(key, i)] = str(exc)
    pool = eventlet.GreenPool()
    for i in range(5):
        for key in ("a", "b", "bad"):
            pool.spawn(one, key, i)
    pool.waitall()
    assert all(out[("bad", i)] == "store fell over" for i in range(5))
    assert all(out[(k, i)] == (k, i) for k in "ab" for i in range(5))
    assert group.submit("a", 99) == ("a", 99)  # and the group still works afterwards


def test_a_batch_is_capped_at_max_size():
    sizes = []

    def run(key, items):
        sizes.append(len(items))
        return list(items)
    group = GroupCommit(run, window=0.005, max_size=4)
    pool = eventlet.GreenPool()
    results = [pool.spawn(group.submit, "k", i) for i in range(10)]
    assert [r.wait() for r in results] == list(range(10))
    assert max(sizes) <= 4 and sum(sizes) == 10


def test_a_wrong_number_of_outcomes_is_an_error_not_a_silent_answer():
    group = GroupCommit(lambda key, items: [], window=0)
    with pytest.raises(RuntimeError):
        group.submit("k", 1)


def test_submit_many_keeps_an_upstream_batch_whole_and_merges_it_with_what_waits():
    seen = []

    def run(key, items):
        seen.append(list(items))
        eventlet.sleep(0.01)
        return [ValueError("no %s" % i) if i.endswith("x") else i.upper() for i in items]
    group = GroupCommit(run, window=0.002, max_size=64)
    pool = eventlet.GreenPool()
    first = pool.spawn(group.submit_many, "c", ["a1", "a2x", "a3"])
    eventlet.sleep(0.001)  # the first batch is being written when the next two arrive: they wait for the next one
    eventlet.sleep(0.003)
    second = pool.spawn(group.submit_many, "c", ["b1", "b2"])
    single = pool.spawn(group.submit, "c", "s1")
    one = first.wait()
    assert one[0] == "A1" and isinstance(one[1], ValueError) and str(one[1]) == "no a2x" and one[2] == "A3"
    assert second.wait() == ["B1", "B2"] and single.wait() == "S1"
    assert seen[0] == ["a1", "a2x", "a3"]  # the upstream batch stayed one batch
    assert seen[1:] == [["b1", "b2", "s1"]]  # what arrived while it was written went together
    assert not group._pending and not group._leaders
    assert group.submit_many("c", []) == []


def test_submit_many_larger_than_max_size_is_answered_in_order_over_several_batches():
    sizes = []

    def run(key, items):
        sizes.append(len(items))
        eventlet.sleep(0.001)
        return [i * 2 for i in items]
    group = GroupCommit(run, window=0, max_size=4)
    pool = eventlet.GreenPool()
    a = pool.spawn(group.submit_many, "k", list(range(10)))
    b = pool.spawn(group.submit_many, "k", list(range(100, 103)))
    c = pool.spawn(group.submit, "k", 7)
    assert a.wait() == [i * 2 for i in range(10)]
    assert b.wait() == [200, 202, 204] and c.wait() == 14
    assert max(sizes) <= 4 and sum(sizes) == 14
    assert not group._pending and not group._leaders


def test_submit_many_gets_a_failing_batch_as_exceptions_and_the_group_keeps_working():
    calls = []

    def run(key, items):
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("store fell over")
        return list(items)
    group = GroupCommit(run, window=0)
    out = group.submit_many("k", [1, 2])
    assert [str(o) for o in out] == ["store fell over"] * 2 and all(isinstance(o, RuntimeError) for o in out)
    assert group.submit_many("k", [3]) == [3]


class Lanes:
    """A recording ``run``: batch sizes, and the most batches that were on their way at once."""

    def __init__(self, seconds, answer):
        self.seconds, self.answer = seconds, answer
        self.running, self.most, self.sizes = 0, 0, []

    def __call__(self, key, items):
        self.running += 1
        self.most = max(self.most, self.running)
        self.sizes.append(len(items))
        eventlet.sleep(self.seconds(items))
        self.running -= 1
        return [self.answer(i) for i in items]


def test_a_second_lane_opens_only_under_load_and_batches_overlap():
    run = Lanes(lambda items: 0.02, lambda i: i + 1)
    group = GroupCommit(run, window=0.001, max_size=64, lanes=2, lane_at=4)
    assert group.submit("k", 1) == 2 and run.most == 1  # alone: one lane
    pool = eventlet.GreenPool()
    first = [pool.spawn(group.submit, "k", i) for i in range(3)]  # a batch on its way ...
    eventlet.sleep(0.005)
    more = [pool.spawn(group.submit, "k", i) for i in range(100, 106)]  # ... and 6 waiting: the 4th opens lane 2
    assert [g.wait() for g in first] == [1, 2, 3] and [g.wait() for g in more] == list(range(101, 107))
    assert run.most == 2 and sum(run.sizes) == 10
    assert not group._pending and not group._leaders


@pytest.mark.parametrize("lane_wait", [None, 0.001, 0.0003])
@pytest.mark.parametrize("seed", [7, 11, 23])
def test_lanes_under_a_storm_answer_every_request_once_and_in_its_own_batch(lane_wait, seed):
    import random
    rnd = random.Random(seed)
    seen = []

    def run(key, items):
        seen.extend(items)
        eventlet.sleep(rnd.random() * 0.004)
        if rnd.random() < 0.1:
            raise RuntimeError("batch failed")
        return [("ok", i) for i in items]
    group = GroupCommit(run, window=0.0005, max_size=5, lanes=3, lane_at=2, lane_wait=lane_wait)
    pool = eventlet.GreenPool(500)
    singles, manys = {}, {}

    def single(i):
        try:
            singles[i] = group.submit(i % 3, i)
        except RuntimeError:
            singles[i] = "failed"

    def many(i):
        items = [(i, j) for j in range(rnd.randint(1, 8))]
        manys[i] = (items, group.submit_many(i % 3, items))
    for i in range(400):
        pool.spawn(single if i % 4 else many, i)
        if i % 7 == 0:
            eventlet.sleep(rnd.random() * 0.002)
    pool.waitall()
    assert all(v in (("ok", i), "failed") for i, v in singles.items()) and len(singles) == 300
    for items, outs in manys.values():
        assert len(outs) == len(items)
        assert all(o == ("ok", it) or (isinstance(o, RuntimeError)) for it, o in zip(items, outs))
    assert len(seen) == len(set(seen)) == 300 + sum(len(items) for items, _ in manys.values())  # each once
    assert not group._pending and not group._leaders


def test_a_request_that_waited_lane_wait_opens_a_lane_for_itself_and_those_behind_it():
    # the first batch is slow to come back
    run = Lanes(lambda items: 0.1 if items[0] == "slow" else 0.005, str.upper)
    group = GroupCommit(run, window=0.001, max_size=64, lanes=2, lane_at=50, lane_wait=0.01)
    pool = eventlet.GreenPool()
    slow = pool.spawn(group.submit, "k", "slow")
    eventlet.sleep(0.003)
    quick = [pool.spawn(group.submit, "k", x) for x in ("a", "b", "c")]
    t0 = eventlet.hubs.get_hub().clock()
    assert [g.wait() for g in quick] == ["A", "B", "C"]
    assert eventlet.hubs.get_hub().clock() - t0 < 0.08  # not held back until the slow batch came back
    assert slow.wait() == "SLOW" and run.most == 2 and sorted(run.sizes) == [1, 3]
    assert not group._pending and not group._leaders

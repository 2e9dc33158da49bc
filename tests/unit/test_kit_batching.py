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
    assert not group._pending and not group._leading  # nothing left waiting, no leader left behind


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

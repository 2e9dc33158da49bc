"""gateway.framework.ReadCache: one read per expiry however many connections miss at once, no waiting behind
answers that cannot be kept, and no answer kept that was read before a write this gateway passed on."""
import eventlet

from gateway.framework import ReadCache

KEY = ("/api/v1/unions", b"level=prefecture")


def test_concurrent_misses_wait_for_one_read():
    cache, reads, answers = ReadCache(), [], []

    def request():
        hit, fills = cache.get(KEY)
        if hit is None:
            reads.append(1)
            eventlet.sleep(0.02)  # the RPC
            hit = cache.put(KEY, b'{"items": []}', 1.0)
            if fills:
                cache.done(KEY)
        answers.append(hit[1])
    pool = eventlet.GreenPool()
    for _ in range(32):
        pool.spawn(request)
    pool.waitall()
    assert len(reads) == 1 and answers == [b'{"items": []}'] * 32 and not cache.filling


def test_an_answer_that_cannot_be_kept_makes_no_one_wait():
    cache = ReadCache()
    hit, fills = cache.get(KEY)
    assert hit is None and fills
    cache.put(KEY, b"{}", 0)  # a live campaign: read through
    cache.done(KEY)
    assert cache.get(KEY) == (None, False) and not cache.filling  # the next one reads at once, and alone


def test_an_answer_read_before_a_write_is_not_kept():
    cache = ReadCache()
    cache.get(KEY)
    before = cache.generation.get("unions", 0)
    cache.written("/api/v1/unions")  # a union created while the list was being read
    cache.put(KEY, b"old", 1.0, before)
    cache.done(KEY)
    assert cache.get(KEY)[0] is None
    cache.done(KEY)
    cache.put(KEY, b"new", 1.0, cache.generation["unions"])
    assert cache.get(KEY)[0][1] == b"new"

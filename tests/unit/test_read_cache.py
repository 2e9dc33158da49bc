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
    before = cache.stamp(KEY[0])
    cache.written("/api/v1/unions")  # a union created while the list was being read
    cache.put(KEY, b"old", 1.0, before)
    cache.done(KEY)
    assert cache.get(KEY)[0] is None
    cache.done(KEY)
    cache.put(KEY, b"new", 1.0, cache.stamp(KEY[0]))
    assert cache.get(KEY)[0][1] == b"new"


def fill(cache, path, data=b"{}"):
    key = (path, b"")
    cache.get(key)
    cache.put(key, data, 1.0, cache.stamp(path))
    cache.done(key)
    return key


def test_an_announced_change_drops_that_id_and_the_lists_only():
    cache = ReadCache()
    one, other = fill(cache, "/api/v1/campaigns/cmp_1"), fill(cache, "/api/v1/campaigns/cmp_2")
    listed, paged = fill(cache, "/api/v1/campaigns"), fill(cache, "/api/v1/campaigns/")
    unions = fill(cache, "/api/v1/unions")
    cache.changed("campaigns", "cmp_1")  # a coupon of cmp_1 claimed through another gateway
    assert cache.get(one) == (None, True) and cache.get(listed) == (None, True) and cache.get(paged) == (None, True)
    assert cache.get(other)[0] is not None and cache.get(unions)[0] is not None


def test_an_answer_read_before_an_announced_change_is_not_kept():
    cache = ReadCache()
    path = "/api/v1/campaigns/cmp_1"
    key = (path, b"")
    cache.get(key)
    before = cache.stamp(path)
    cache.changed("campaigns", "cmp_1")  # the event arrives while the read is on its way
    cache.put(key, b'{"remaining": 3}', 1.0, before)
    cache.done(key)
    assert cache.get(key) == (None, True)
    cache.done(key)
    list_before = cache.stamp("/api/v1/campaigns")
    cache.changed("campaigns", "cmp_9")  # a change of any campaign moves the lists' stamp
    assert cache.stamp("/api/v1/campaigns") != list_before and cache.stamp(path) == before[:1] + (1, 0)


def test_a_count_started_again_never_matches_an_old_stamp():
    cache = ReadCache()
    path = "/api/v1/campaigns/cmp_1"
    before = cache.stamp(path)
    cache.changed("campaigns", "cmp_1")
    for i in range(cache.MAX_ENTRIES):  # the counts are cleared when they grow past MAX_ENTRIES
        cache.changed("campaigns", "cmp_x%d" % i)
    assert cache.stamp(path) != before


def test_a_write_through_this_gateway_drops_the_ids_and_the_lists():
    cache = ReadCache()
    one, listed = fill(cache, "/api/v1/campaigns/cmp_1"), fill(cache, "/api/v1/campaigns")
    other = fill(cache, "/api/v1/campaigns/cmp_2")
    before = cache.stamp("/api/v1/campaigns/cmp_1")
    cache.written("/api/v1/campaigns/cmp_1/claims")
    assert cache.get(one) == (None, True) and cache.get(listed) == (None, True)
    assert cache.get(other)[0] is not None  # a claim of cmp_1 changes nothing of cmp_2
    assert cache.stamp("/api/v1/campaigns/cmp_1") != before
    cache.written("/api/v1/campaigns")  # a new campaign: everything of the resource
    assert cache.get(other) == (None, True)

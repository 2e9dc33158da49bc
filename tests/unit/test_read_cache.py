"""gateway.framework.ReadCache: one read per expiry however many connections miss at once, no waiting behind
answers that cannot be kept, and no answer kept that was read before a write this gateway passed on."""
import eventlet

from gateway.framework import ReadCache

KEY = ("/api/v1/unions", b"level=prefecture")


def read(cache, key, data, seconds=1.0, reads=None, before_put=None):
    """One request as the router makes it: a hit, the answer of a read it waited for, or a read of its own."""
    stamp = cache.stamp(key[0])
    hit, fill = cache.get(key, stamp)
    if hit is None:
        if reads is not None:
            reads.append(1)
        eventlet.sleep(0.02)  # the RPC
        if before_put:
            before_put()
        hit = cache.put(key, data, seconds, stamp)
        if fill is not None:
            cache.done(key, fill, hit)
    return hit[1]


def test_concurrent_misses_wait_for_one_read():
    cache, reads, answers = ReadCache(), [], []
    pool = eventlet.GreenPool()
    for _ in range(32):
        pool.spawn(lambda: answers.append(read(cache, KEY, b'{"items": []}', reads=reads)))
    pool.waitall()
    assert len(reads) == 1 and answers == [b'{"items": []}'] * 32 and not cache.filling


def test_an_answer_that_cannot_be_kept_is_the_answer_of_those_who_waited_and_the_next_one_reads_again():
    cache, reads, answers = ReadCache(), [], []
    pool = eventlet.GreenPool()
    for _ in range(8):
        pool.spawn(lambda: answers.append(read(cache, KEY, b"{}", seconds=0, reads=reads)))
    pool.waitall()
    assert len(reads) == 1 and answers == [b"{}"] * 8 and not cache.filling and not cache.entries
    read(cache, KEY, b"{}", seconds=0, reads=reads)
    assert len(reads) == 2


def test_an_answer_read_before_a_write_is_not_kept():
    cache = ReadCache()
    stamp = cache.stamp(KEY[0])
    hit, fill = cache.get(KEY, stamp)
    cache.written("/api/v1/unions")  # a union created while the list was being read
    cache.done(KEY, fill, cache.put(KEY, b"old", 1.0, stamp))
    assert cache.get(KEY, cache.stamp(KEY[0]))[0] is None
    cache.filling.clear()
    stamp = cache.stamp(KEY[0])
    cache.put(KEY, b"new", 1.0, stamp)
    assert cache.get(KEY, stamp)[0][1] == b"new"


def test_a_request_after_a_write_never_gets_the_answer_of_a_read_that_started_before_it():
    """The read on its way when a claim's 201 left is not the answer of the claimer's next read: that one reads
    again; the requests that came before the claim share the older read."""
    cache, answers = ReadCache(), {}
    path = "/api/v1/campaigns/cmp_1"
    key = (path, b"")

    def early(name):
        answers[name] = read(cache, key, b'{"remaining": 5}')
    pool = eventlet.GreenPool()
    pool.spawn(early, "filler")
    eventlet.sleep(0)
    pool.spawn(early, "waiter")  # came while the first read was on its way, before the claim
    eventlet.sleep(0.005)
    cache.written(path + "/claims")  # the claim's 201 leaves
    pool.spawn(lambda: answers.update(after=read(cache, key, b'{"remaining": 4}')))
    pool.waitall()
    assert answers == {"filler": b'{"remaining": 5}', "waiter": b'{"remaining": 5}', "after": b'{"remaining": 4}'}
    assert cache.get(key, cache.stamp(path))[0][1] == b'{"remaining": 4}' and not cache.filling


def test_a_failed_read_lets_those_who_waited_read_alone():
    cache = ReadCache()
    stamp = cache.stamp(KEY[0])
    _, fill = cache.get(KEY, stamp)
    got = []
    waiter = eventlet.spawn(lambda: got.append(cache.get(KEY, stamp)))
    eventlet.sleep(0)
    cache.done(KEY, fill)  # the service answered an error
    waiter.wait()
    assert got == [(None, None)] and not cache.filling


def fill(cache, path, data=b"{}"):
    key = (path, b"")
    stamp = cache.stamp(path)
    _, token = cache.get(key, stamp)
    cache.done(key, token, cache.put(key, data, 1.0, stamp))
    return key


def missed(cache, key):
    hit, token = cache.get(key, cache.stamp(key[0]))
    if token is not None:
        cache.done(key, token)
    return hit is None


def test_an_announced_change_drops_that_id_and_the_lists_only():
    cache = ReadCache()
    one, other = fill(cache, "/api/v1/campaigns/cmp_1"), fill(cache, "/api/v1/campaigns/cmp_2")
    listed, paged = fill(cache, "/api/v1/campaigns"), fill(cache, "/api/v1/campaigns/")
    unions = fill(cache, "/api/v1/unions")
    cache.changed("campaigns", "cmp_1")  # a coupon of cmp_1 claimed through another gateway
    assert missed(cache, one) and missed(cache, listed) and missed(cache, paged)
    assert not missed(cache, other) and not missed(cache, unions)


def test_an_answer_read_before_an_announced_change_is_not_kept():
    cache = ReadCache()
    path = "/api/v1/campaigns/cmp_1"
    key = (path, b"")
    before = cache.stamp(path)
    _, token = cache.get(key, before)
    cache.changed("campaigns", "cmp_1")  # the event arrives while the read is on its way
    cache.done(key, token, cache.put(key, b'{"remaining": 3}', 1.0, before))
    assert missed(cache, key)
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
    assert missed(cache, one) and missed(cache, listed)
    assert not missed(cache, other)  # a claim of cmp_1 changes nothing of cmp_2
    assert cache.stamp("/api/v1/campaigns/cmp_1") != before
    cache.written("/api/v1/campaigns")  # a new campaign: everything of the resource
    assert missed(cache, other)

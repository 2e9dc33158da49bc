"""Posting search without ``$text``: tokens, search keys, the choice of driving key, time windows and cursors.

Tokens. Text is NFKC-normalised and lower-cased, then cut into runs of Chinese characters and runs of Latin letters
and digits. A Chinese run gives its character bigrams (``电焊工`` -> ``电焊``, ``焊工``); Latin runs are words
(``CNC`` -> ``cnc``). Titles also give single Chinese characters, so a one-character query (``焊``) finds titles.
A query matches a posting when every query token is among the posting's tokens.

Search keys. An open posting carries one multikey array, ``search_keys``, under the compound index
``(search_keys, order_key desc)``; a closed or expired posting carries none, so the index holds open postings only:

* ``*`` every open posting;                       * ``w:<token>`` its tokens;
* ``r:<prefix>`` ``5101``, ``510104``;             * ``c:<category>``; ``rc:<prefix>:<category>``;
* ``s:<band>`` every salary band its ``salary_min`` reaches (for ``salary_min=`` filters).

Every posting lies in the province (region codes come from the seeded Sichuan list), so the province prefix ``51``
needs no key of its own: ``region_code=51`` restricts nothing. Keys are what a posting costs to index (about 35 each
at seed scale), so they are kept to what the query mix needs. Measured and not taken: keyword-in-prefecture keys
(``wp:<token>@<prefecture>``, ~24 more per posting) made keyword + region searches 37 -> 50 q/s at 690,000 postings
but every other search ~12% slower (bigger documents to fetch), seeding 13.5 -> 27.8 minutes and the store 6.7 ->
11 GB. After a change to the keys, ``python -m services.jobs.rekey`` gives existing postings the new ones.

``order_key`` is ``<13-digit created_at ms>-<id>``: one string that orders postings newest first with a tie-break,
and is also the opaque cursor's content (keyset pagination, never ``skip``).

Driving key and windows. A query names several keys; the one with the fewest postings (from the ``search_stats``
counts) drives the index scan, and the rest is checked on the candidates (``matches``). The embedded store fetches
every entry in an index range before it applies a limit, so a page is read in time windows of ``order_key``
(``{search_keys: k, order_key: {$gte: lo, $lt: hi}}``), each sized from the expected density to hold about one page
of matches; windows grow until the page is full or the oldest open posting is passed. Every page, however deep,
costs about the same. On MongoDB the same queries use the same index.
"""

from unionhub_kit import regions

from .text import (  # noqa: F401  (the search's view of the shared text rules)
    MAX_QUERY_TOKENS, ORDER_KEY_RE, decode_cursor, encode_cursor, query_tokens, tokens)

SALARY_BANDS = (3000, 5000, 8000, 12000, 20000)
DAY_MS = 86400 * 1000
# the planner's bounds for one window (expected candidates fetched by one index range scan)
WINDOW_CANDIDATES = 300
MIN_WINDOW_MS = 60 * 1000


def posting_tokens(title, description):
    return list(dict.fromkeys(tokens(title, unigrams=True) + tokens(description)))


def salary_bands(salary_min):
    return [b for b in SALARY_BANDS if salary_min >= b]


def band_for(salary_min):
    """The highest band at or below a requested minimum salary (its key narrows the scan), or None."""
    bands = salary_bands(salary_min)
    return bands[-1] if bands else None


def region_prefixes(code):
    """``510104`` -> ``["51", "5101", "510104"]``; ``510100`` -> ``["51", "5101"]``; ``510000`` -> ``["51"]``."""
    short = regions.normalize_prefix(code)
    return [short[:n] for n in (2, 4, 6) if len(short) >= n]


def search_keys(posting):
    """Every key an open posting is found by (see the module docstring)."""
    cat = posting["category"]
    prefixes = region_prefixes(posting["region_code"])[1:]  # below the province
    keys = ["*", "c:" + cat]
    keys += ["r:" + p for p in prefixes]
    keys += ["rc:%s:%s" % (p, cat) for p in prefixes]
    keys += ["s:%d" % b for b in salary_bands(posting["salary_min"])]
    keys += ["w:" + t for t in posting_tokens(posting["title"], posting["description"])]
    return keys


def query_keys(flt):
    """The keys a search names: every one must be among a matching posting's keys.

    ``flt``: ``q`` tokens already split (``tokens``), ``region_code`` (a prefix), ``category``, ``salary_min``.
    """
    keys = ["w:" + t for t in flt.get("tokens") or ()]
    region, cat = flt.get("region_code"), flt.get("category")
    if region and len(region) == 2:
        region = None  # the whole province: every posting
    if region and cat:
        keys.append("rc:%s:%s" % (region, cat))
    elif region:
        keys.append("r:" + region)
    elif cat:
        keys.append("c:" + cat)
    if flt.get("salary_min") is not None and band_for(flt["salary_min"]) is not None:
        keys.append("s:%d" % band_for(flt["salary_min"]))
    return keys or ["*"]


def matches(doc, keys, salary_min=None):
    """Whether a candidate posting (with its ``search_keys``) satisfies the whole query."""
    have = doc.get("search_keys") or ()
    if not have or not set(keys).issubset(have):
        return False
    return salary_min is None or doc["salary_min"] >= salary_min


def choose_driver(keys, counts):
    """The key with the fewest postings (unknown keys count as none: nothing has them)."""
    return min(keys, key=lambda k: (counts.get(k, 0), k))


def estimate_matches(keys, counts, total):
    """Expected matching postings, treating the keys as independent."""
    if total <= 0:
        return 0.0
    est = float(total)
    for k in set(keys):
        est *= min(1.0, counts.get(k, 0) / float(total))
    return est


class WindowPlan:
    """Sizes the time windows of one page scan (pure arithmetic; the store runs the queries).

    ``driver_count``: postings under the driving key; ``expected``: expected matches overall; ``span_ms``: the time
    the open postings span; ``want``: matches needed (a page plus one, to know whether there is a next page).
    """

    def __init__(self, driver_count, expected, span_ms, want):
        self.span = max(span_ms, MIN_WINDOW_MS)
        self.want = want
        self.driver_density = driver_count / float(self.span)  # candidates per ms
        self.expected_density = max(expected, 0.5) / float(self.span)  # matches per ms
        self.scanned_ms = 0
        self.found = 0

    def _cap(self):
        if self.driver_density <= 0:
            return self.span
        return max(MIN_WINDOW_MS, WINDOW_CANDIDATES / self.driver_density)

    def first(self):
        return int(min(self._cap(), max(MIN_WINDOW_MS, 1.3 * self.want / self.expected_density)))

    def next(self, window_ms, matched):
        """The next window after one of ``window_ms`` that gave ``matched`` matches."""
        self.scanned_ms += window_ms
        self.found += matched
        need = max(1, self.want - self.found)
        if self.found:  # sized for what is missing at the density seen so far
            size = 1.2 * need * self.scanned_ms / float(self.found)
        else:
            size = window_ms * 4
        return int(min(self._cap(), max(MIN_WINDOW_MS, size)))


def order_key(created_ms, posting_id):
    return "%013d-%s" % (created_ms, posting_id)


def order_key_ms(key):
    return int(key[:13])



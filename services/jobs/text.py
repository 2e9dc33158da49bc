"""The text rules jobs' contract and its search share: tokens of a query or posting, and the cursor of a posting
list (an ``order_key``). Free of the search planner and the store, so the gateway validates with them without
loading either."""
import re
import unicodedata

from unionhub_kit import paging
from unionhub_kit.errors import AppError

MAX_QUERY_TOKENS = 16
ORDER_KEY_RE = re.compile(r"^\d{13}-[0-9a-f]{24}$")
_RUN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z0-9]+")
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _runs(text):
    return _RUN_RE.findall(unicodedata.normalize("NFKC", text or "").lower())


def tokens(text, unigrams=False):
    """The distinct tokens of ``text`` in first-seen order (bigrams of Chinese runs, Latin words).

    ``unigrams``: also every single Chinese character (used for titles, and for one-character queries).
    """
    out = {}
    for run in _runs(text):
        if _CJK_RE.match(run):
            if len(run) == 1 or unigrams:
                for ch in run:
                    out.setdefault(ch, None)
            for i in range(len(run) - 1):
                out.setdefault(run[i:i + 2], None)
        else:
            out.setdefault(run, None)
    return list(out)


def query_tokens(q):
    """Tokens a query must all match: bigrams of its Chinese runs (a lone character stays itself), Latin words."""
    return tokens(q)[:MAX_QUERY_TOKENS]


encode_cursor = paging.encode_cursor


def decode_cursor(cursor):
    """The ``order_key`` inside a cursor, or ``ValueError`` when it is not one of ours."""
    try:
        return paging.decode_cursor(cursor, ORDER_KEY_RE.pattern)
    except AppError:
        raise ValueError("not a cursor")

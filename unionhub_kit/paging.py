"""Keyset pagination: opaque cursors (base64 of the last sort key) and ``{"items", "next_cursor"}`` pages."""
import base64
import binascii
import re

from .errors import validation_error


def encode_cursor(key):
    return base64.urlsafe_b64encode(str(key).encode()).decode().rstrip("=")


def decode_cursor(cursor, pattern=None):
    """The sort key in an opaque cursor; a malformed cursor (or, with ``pattern``, a key that does not match it
    whole) is a 400."""
    if cursor is None:
        return None
    try:
        key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        key = None
    if not key or not key.isprintable() or (pattern is not None and not re.fullmatch(pattern, key)):
        raise validation_error({"cursor": ["is not a cursor this list gave out."]})
    return key


def page(items, limit, key):
    """``{"items", "next_cursor"}`` from ``limit + 1`` fetched rows."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(key(items[-1])) if more and items else None}

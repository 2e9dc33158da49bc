"""The one notion of "now" in UnionHub: UTC, to the millisecond (what the store keeps, so a stored time compares
equal to the one computed), plus ``CLOCK.offset``.

The offset is zero in production. ``NOTIFY_CLOCK_OFFSET_SECONDS`` sets it at notify's start, and tests move
``CLOCK.offset`` to pass quiet hours and backoff delays without waiting.
"""
import datetime


class Clock:
    def __init__(self):
        self.offset = datetime.timedelta(0)

    def now(self):
        now = datetime.datetime.now(datetime.timezone.utc) + self.offset
        return now.replace(microsecond=now.microsecond // 1000 * 1000)


CLOCK = Clock()


def now():
    return CLOCK.now()

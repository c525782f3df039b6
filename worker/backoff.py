"""How long to wait, for tracking and delivery alike: the spread of due times, and an
HTTP server's own `Retry-After`."""

from __future__ import annotations

import datetime as dt
import email.utils

# Spreads work scheduled together (sessions tracked at once, retries of one outage), so
# it does not all fall due on the same tick.
JITTER = 0.1
# The longest wait a server's Retry-After can ask for. Past a day it is a broken or
# hostile header, and a date far enough ahead would overflow every schedule it touched
# (or pause an account until the year it names).
LONGEST_RETRY_AFTER = 86_400.0


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date (RFC 9110),
    at most LONGEST_RETRY_AFTER."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        seconds = (moment - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return min(max(0.0, seconds), LONGEST_RETRY_AFTER)

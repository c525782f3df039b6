"""When a session is polled next: per status, after an error, after a 404."""

from __future__ import annotations

import random

from worker.backoff import JITTER
from worker.config import Settings


def next_poll_delay(status: str | None, *, settings: Settings, rng: random.Random) -> float:
    """Seconds until the next poll of a session that answered with `status`.

    A session still IDLE (or not yet seen) is polled at POLL_INTERVAL_IDLE, one in
    progress at POLL_INTERVAL: the customer is busy and the end is near.

    The interval is the longest a session goes unpolled, so it bounds how late a
    completion is seen: the spread comes off it, and so does the up to DISPATCH_INTERVAL
    a due session waits for the next beat tick to lease it.
    """
    base = settings.poll_interval_idle if status in (None, "IDLE") else settings.poll_interval
    return max(0.0, base * rng.uniform(1 - JITTER, 1) - settings.dispatch_interval)


def error_backoff_delay(
    consecutive_errors: int, *, settings: Settings, rng: random.Random
) -> float:
    """Exponential backoff with full jitter: random(0, min(cap, base * 2^attempt)).

    Full jitter spreads the retries of many sessions that failed together (AWS
    Architecture Blog, "Exponential Backoff and Jitter"). The base is POLL_INTERVAL.
    """
    exponent = min(consecutive_errors, 32)
    ceiling = min(settings.error_backoff_cap, settings.poll_interval * 2**exponent)
    return rng.uniform(0, ceiling)

"""PAVE_RATE_LIMIT (or an `[[account]]`'s `rate_limit`): requests per second to PAVE, for
one account, each account counted apart.

Shared by every worker through Redis when Redis is the broker, per process otherwise
(the embedded default runs one worker). The counting is the `limits` package's sliding
window; this module only waits for a free slot.
"""

from __future__ import annotations

import asyncio
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from worker.accounts import DEFAULT_ACCOUNT, Account
from worker.config import Settings

NAMESPACE = ("pave-tracker", "pave-requests")


def rate_item(per_second: float) -> RateLimitItem:
    """N per second; below one, one request every 1/N seconds (fractions above one round
    down: the window counts whole requests)."""
    if per_second >= 1:
        return RateLimitItemPerSecond(int(per_second))
    return RateLimitItemPerSecond(1, max(1, round(1 / per_second)))


class PaveRateLimit:
    def __init__(self, per_second: float, storage: Storage, *,
                 account: str = DEFAULT_ACCOUNT) -> None:
        self.item = rate_item(per_second)
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.keys = (*NAMESPACE, account)

    async def acquire(self, *, until: float | None = None) -> bool:
        """Wait until one more request fits in the window; False if that would be after
        `until` (the event loop's clock), and then no slot is taken."""
        loop = asyncio.get_running_loop()
        while not await self.limiter.hit(self.item, *self.keys):
            stats = await self.limiter.get_window_stats(self.item, *self.keys)
            wait = min(1.0, max(0.005, stats.reset_time - time.time()))
            if until is not None and loop.time() + wait > until:
                return False
            await asyncio.sleep(wait)
        return True


def rate_limit_from(settings: Settings, account: Account | None = None
                    ) -> PaveRateLimit | None:
    """The account's limit (`default`'s is PAVE_RATE_LIMIT), in Redis when Redis is the
    broker, else in this process."""
    per_second = account.rate_limit if account is not None else settings.pave_rate_limit
    if per_second is None:
        return None
    broker = settings.effective_broker_url
    if broker.startswith(("redis://", "rediss://")):
        storage: Storage = RedisStorage(broker, implementation="redispy")
    else:
        storage = MemoryStorage()
    return PaveRateLimit(per_second, storage,
                         account=account.name if account is not None else DEFAULT_ACCOUNT)

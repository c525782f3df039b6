"""PAVE_RATE_LIMIT: one budget per account, shared through Redis by every worker."""

from __future__ import annotations

import asyncio
import time

from limits.aio.storage import MemoryStorage

from tests.conftest import make_settings
from worker.pave.ratelimit import PaveRateLimit, rate_item, rate_limit_from


async def acquire_all(limits: list[PaveRateLimit], each: int) -> float:
    started = time.monotonic()
    await asyncio.gather(*(limit.acquire() for limit in limits for _ in range(each)))
    return time.monotonic() - started


def test_rates() -> None:
    assert (rate_item(20).amount, rate_item(20).multiples) == (20, 1)
    assert (rate_item(2.7).amount, rate_item(2.7).multiples) == (2, 1)
    assert (rate_item(0.5).amount, rate_item(0.5).multiples) == (1, 2)


def test_a_local_limit_spaces_requests_out() -> None:
    limit = PaveRateLimit(10, MemoryStorage())
    # 25 requests at 10/s: the first ten at once, the rest need two more windows.
    assert asyncio.run(acquire_all([limit], 25)) >= 1.0


def test_no_limit_by_default() -> None:
    assert rate_limit_from(make_settings("sqlite://")) is None
    local = rate_limit_from(make_settings("sqlite://", pave_rate_limit=5))
    assert local is not None and isinstance(local.limiter.storage, MemoryStorage)


def test_workers_share_one_budget_through_redis(redis_url: str) -> None:
    settings = make_settings("sqlite://", pave_rate_limit=10, redis_url=redis_url)

    async def run() -> tuple[float, int]:
        # Two "workers", each with its own limiter over the same Redis.
        first, second = rate_limit_from(settings), rate_limit_from(settings)
        assert first is not None and second is not None
        started = time.monotonic()
        granted = 0

        async def take(limit: PaveRateLimit) -> None:
            nonlocal granted
            await limit.acquire()
            granted += 1

        await asyncio.gather(*(take(limit) for limit in (first, second) for _ in range(8)))
        return time.monotonic() - started, granted

    elapsed, granted = asyncio.run(run())
    assert granted == 16
    # Eight each fits one worker's own 10/s at once; sixteen against one shared 10/s
    # budget cannot.
    assert elapsed >= 0.5


def test_each_account_has_a_budget_of_its_own(redis_url: str) -> None:
    """North's own `rate_limit`, and the default account's PAVE_RATE_LIMIT, counted apart in
    the same Redis: north using its whole budget takes nothing of the default's."""
    from pydantic import SecretStr

    from worker.accounts import Account

    settings = make_settings("sqlite://", pave_rate_limit=10, redis_url=redis_url)
    north = Account(name="north", api_url="http://127.0.0.1:9/v1", api_key=SecretStr("k"),
                    api_token=SecretStr("t"), rate_limit=10)
    default_limit, north_limit = rate_limit_from(settings), rate_limit_from(settings, north)
    assert default_limit is not None and north_limit is not None
    assert north_limit.keys != default_limit.keys
    unlimited = Account(name="south", api_url="http://127.0.0.1:9/v1", api_key=SecretStr("k"),
                        api_token=SecretStr("t"))
    assert rate_limit_from(settings, unlimited) is None  # PAVE_RATE_LIMIT is default's only

    async def run() -> float:
        await acquire_all([north_limit], 10)  # north's whole second
        started = time.monotonic()
        await acquire_all([default_limit], 10)  # the default's, untouched
        return time.monotonic() - started

    assert asyncio.run(run()) < 0.5

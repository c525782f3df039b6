"""Asking PAVE about a batch of sessions at once: what each key's poll came to."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence

from worker import metrics
from worker.errors import PaveAuthError, PaveError, PaveRateLimited, PaveTransportError
from worker.pave.client import PaveClient
from worker.pave.payload import SessionSnapshot
from worker.pave.ratelimit import PaveRateLimit

# What one poll came to: the session as PAVE sent it, or why there is none.
Outcome = SessionSnapshot | PaveError


def is_account_error(outcome: Outcome) -> bool:
    """Errors about the PAVE account as a whole: throttling and refused credentials."""
    return isinstance(outcome, PaveRateLimited | PaveAuthError)


async def fetch_sessions(
    client: PaveClient, keys: Sequence[str], *, concurrency: int, with_results: bool = False,
    rate_limit: PaveRateLimit | None = None, budget: float | None = None,
) -> dict[str, Outcome]:
    """Ask PAVE about every key, at most `concurrency` requests at once.

    With `with_results`, a COMPLETE session also gets its inspection results; if they
    cannot be had, the outcome is that error, so the completion is recorded (and
    announced) only once it can carry them.

    The whole batch takes at most `budget` seconds, whatever its size, concurrency and
    timeouts: a key not answered by then is a transport error, so the batch is recorded
    while its lease still holds.
    """
    gate = asyncio.Semaphore(concurrency)
    deadline = None if budget is None else asyncio.get_running_loop().time() + budget

    async def ask(key: str) -> SessionSnapshot:
        if rate_limit is not None:
            await rate_limit.acquire()
        snapshot = await client.get_session(key)
        if with_results and snapshot.status == "COMPLETE":
            if rate_limit is not None:
                await rate_limit.acquire()
            results = await client.get_results(key)
            snapshot = dataclasses.replace(snapshot, results=results)
        return snapshot

    def out_of_time() -> PaveError:
        error = PaveTransportError(
            f"not answered within the batch's {budget:g} s (LEASE_SECONDS / 2)")
        metrics.POLLS.labels(error.kind).inc()
        return error

    async def one(key: str) -> Outcome:
        async with gate:
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                return out_of_time()  # its turn came too late: not asked at all
            started = time.perf_counter()
            try:
                async with asyncio.timeout_at(deadline):
                    snapshot = await ask(key)
            except TimeoutError:
                return out_of_time()
            except PaveError as error:
                metrics.POLLS.labels(error.kind).inc()
                return error
            finally:
                metrics.POLL_SECONDS.observe(time.perf_counter() - started)
            metrics.POLLS.labels("ok").inc()
            return snapshot

    results = await asyncio.gather(*(one(key) for key in keys))
    return dict(zip(keys, results, strict=True))

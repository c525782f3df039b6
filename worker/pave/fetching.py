"""Asking PAVE about a batch of sessions at once: what each key's poll came to.

A batch asks nothing more once PAVE throttles the account or refuses its credentials
(the account's gate closes; the keys not yet asked come back `NotAsked`), and it never
turns its own waiting (for a free slot, for PAVE_RATE_LIMIT) into a failure of PAVE's:
a key whose turn comes too late is not asked either.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from worker import metrics
from worker.accounts import DEFAULT_ACCOUNT
from worker.errors import PaveError, PaveTransportError
from worker.pave.client import PaveClient
from worker.pave.gate import AccountGate, is_account_error
from worker.pave.payload import SessionSnapshot
from worker.pave.ratelimit import PaveRateLimit

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotAsked:
    """A key this batch did not ask PAVE about: its lease is released, not failed.

    `paused_for`: the account's gate was closed, for this many more seconds (the pause
    may not be in the database yet: the batch that met the 429 writes it when it ends).
    """

    reason: str
    paused_for: float | None = None


# What PAVE's answer to one poll came to: the session as PAVE sent it, or why there is none.
Answer = SessionSnapshot | PaveError
# What became of one key of a batch: PAVE's answer, or no poll at all.
Outcome = Answer | NotAsked

TOO_LATE = NotAsked("its turn came too late in the batch")


def paused(gate: AccountGate) -> NotAsked:
    return NotAsked("the PAVE account is paused", paused_for=gate.seconds_closed())


async def fetch_sessions(
    client: PaveClient, keys: Sequence[str], *, concurrency: int, with_results: bool = False,
    rate_limit: PaveRateLimit | None = None, budget: float | None = None,
    gate: AccountGate | None = None, account: str = DEFAULT_ACCOUNT,
) -> dict[str, Outcome]:
    """Ask PAVE about every key of `account`, at most `concurrency` requests at once.

    With `with_results`, a COMPLETE session also gets its inspection results; if they
    cannot be had, the outcome is that error, so the completion is recorded (and
    announced) only once it can carry them.

    The whole batch takes at most `budget` seconds, whatever its size, concurrency and
    timeouts, so it is recorded while its lease still holds. A request starts only while
    it has its whole PAVE_TIMEOUT left (or half the budget, if that is shorter); a key
    whose turn comes later is `NotAsked`. A request still unanswered at the end of the
    budget is a transport error: PAVE was asked and was slow.
    """
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    deadline = None if budget is None else loop.time() + budget
    start_by = None if budget is None or deadline is None else (
        deadline - min(client.timeout, budget / 2))

    async def turn() -> NotAsked | None:
        """Wait for this request's turn; what stops it, if anything."""
        if gate is not None and not gate.is_open():
            return paused(gate)
        if start_by is not None and loop.time() >= start_by:
            return TOO_LATE
        if rate_limit is not None:
            try:
                acquired = await rate_limit.acquire(until=start_by)
            except Exception as exc:  # its storage (Redis) failed: ask later
                log.warning("PAVE_RATE_LIMIT could not be checked (%s): the batch's keys go "
                            "back unasked", type(exc).__name__)
                return NotAsked(f"PAVE_RATE_LIMIT could not be checked ({type(exc).__name__})")
            if not acquired:
                return TOO_LATE
        if gate is not None and not gate.is_open():  # closed while we waited
            return paused(gate)
        return None

    async def answer(request: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                return await request()
        except TimeoutError:
            raise PaveTransportError(
                f"not answered within the batch's {budget:g} s (LEASE_SECONDS / 2)") from None
        except PaveError as error:
            if gate is not None and is_account_error(error):
                gate.close_for(error)  # no other request of this process starts now
            raise
        finally:
            metrics.POLL_SECONDS.observe(time.perf_counter() - started)

    async def one(key: str) -> Outcome:
        async with slots:
            try:
                if stop := await turn():
                    return stop
                snapshot = await answer(lambda: client.get_session(key))
                if with_results and snapshot.status == "COMPLETE":
                    if stop := await turn():
                        return stop
                    results = await answer(lambda: client.get_results(key))
                    snapshot = dataclasses.replace(snapshot, results=results)
            except PaveError as error:
                metrics.POLLS.labels(account, error.kind).inc()
                return error
            except Exception as exc:
                # A failure nothing above foresaw is this key's failed poll, recorded on
                # it; the rest of the batch is recorded as usual.
                log.exception("asking PAVE about %s failed unexpectedly", key)
                metrics.POLLS.labels(account, PaveError.kind).inc()
                return PaveError(f"unexpected {type(exc).__name__}: {exc}"[:300])
            metrics.POLLS.labels(account, "ok").inc()
            return snapshot

    outcomes = await asyncio.gather(*(one(key) for key in keys))
    return dict(zip(keys, outcomes, strict=True))

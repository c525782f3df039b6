"""A batch stops asking PAVE at the account's first 429 or refusal, and never turns its own
waiting (for a slot, for PAVE_RATE_LIMIT) into PAVE's failure."""

from __future__ import annotations

import asyncio
import threading

import httpx
from limits.aio.storage import MemoryStorage

from worker.errors import PaveAuthError, PaveError, PaveRateLimited
from worker.pave.auth import PaveCredentials
from worker.pave.client import PaveClient
from worker.pave.fetching import TOO_LATE, NotAsked, Outcome, fetch_sessions
from worker.pave.gate import AccountGate
from worker.pave.payload import SessionSnapshot
from worker.pave.ratelimit import PaveRateLimit

CREDENTIALS = PaveCredentials(api_key="k", username="u", api_secret="s")
KEYS = [f"KEY-{n:03d}" for n in range(100)]


class CountingPave:
    """A PAVE that answers every key with `status` (after `delay`), counting requests."""

    def __init__(self, status: int, *, delay: float = 0.01,
                 headers: dict[str, str] | None = None) -> None:
        self.status, self.delay, self.headers = status, delay, headers or {}
        self.requests = 0
        self.lock = threading.Lock()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests += 1
        await asyncio.sleep(self.delay)
        key = request.url.path.rsplit("/", 1)[1]
        if self.status == 200:
            return httpx.Response(200, json={"session_key": key, "status": "IDLE"})
        return httpx.Response(self.status, headers=self.headers, json={"message": "no"})


def fetch_all(pave: CountingPave, keys: list[str] = KEYS, **options: object
              ) -> dict[str, Outcome]:
    async def call() -> dict[str, Outcome]:
        async with PaveClient(base_url="https://pave.test/v1", credentials=CREDENTIALS,
                              transport=httpx.MockTransport(pave)) as client:
            return await fetch_sessions(client, keys, **options)  # type: ignore[arg-type]
    return asyncio.run(call())


def is_paused(outcome: Outcome) -> bool:
    return isinstance(outcome, NotAsked) and outcome.paused_for is not None


def gate() -> AccountGate:
    return AccountGate(auth_pause=300, rate_limit_pause=30)


def test_refused_credentials_stop_the_batch_after_what_was_in_flight() -> None:
    pave = CountingPave(401)
    outcomes = fetch_all(pave, concurrency=5, gate=gate())
    assert pave.requests <= 5  # only the first requests, sent before any answer came
    refused = [o for o in outcomes.values() if isinstance(o, PaveAuthError)]
    assert len(refused) == pave.requests
    assert [o for o in outcomes.values() if is_paused(o)] and len(outcomes) == 100


def test_a_429_stops_the_batch_too() -> None:
    pave = CountingPave(429, headers={"Retry-After": "10"})
    account = gate()
    outcomes = fetch_all(pave, concurrency=5, gate=account)
    assert pave.requests <= 5
    assert sum(isinstance(o, PaveRateLimited) for o in outcomes.values()) == pave.requests
    assert not account.is_open()


def test_a_gate_closed_by_another_thread_stops_this_batch_before_it_asks() -> None:
    account = gate()
    account.close_for(PaveRateLimited("429", retry_after=60))
    pave = CountingPave(200)
    outcomes = fetch_all(pave, concurrency=5, gate=account)
    assert pave.requests == 0 and all(is_paused(o) for o in outcomes.values())
    # Each says how long the gate stays closed, for the batch to give its keys back until.
    assert all(59 < o.paused_for <= 60 for o in outcomes.values()  # type: ignore[union-attr]
               if isinstance(o, NotAsked) and o.paused_for is not None)


def test_without_a_gate_every_key_is_asked() -> None:
    """The gate is what stops a batch: without one (a single check), all are asked."""
    pave = CountingPave(401)
    fetch_all(pave, concurrency=5)
    assert pave.requests == 100


def test_a_gate_opens_again_when_the_pause_ends() -> None:
    now = [0.0]
    account = AccountGate(auth_pause=300, rate_limit_pause=30, clock=lambda: now[0])
    account.close_for(PaveRateLimited("429", retry_after=10))
    account.close_for(PaveRateLimited("429", retry_after=2))  # a shorter one keeps the longer
    now[0] = 9.9
    assert not account.is_open()
    now[0] = 10.0
    assert account.is_open()
    account.close_for(PaveAuthError("401"))
    now[0] = 309.9
    assert not account.is_open()


def test_waiting_for_our_own_rate_limit_is_not_a_failure_of_paves() -> None:
    """At 5 requests/s a batch of 100 with 1 s to ask can ask only a few: the rest are
    not asked (released), none is a transport error."""
    pave = CountingPave(200, delay=0)
    limit = PaveRateLimit(5, MemoryStorage())
    outcomes = fetch_all(pave, concurrency=20, rate_limit=limit, budget=2.0)
    asked = [o for o in outcomes.values() if isinstance(o, SessionSnapshot)]
    released = [o for o in outcomes.values() if isinstance(o, NotAsked)]
    assert len(asked) == pave.requests and 5 <= len(asked) <= 15
    assert set(released) == {TOO_LATE} and len(asked) + len(released) == 100


def test_a_failure_nothing_foresaw_is_that_keys_error_not_the_batchs() -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        key = request.url.path.rsplit("/", 1)[1]
        if key == "KEY-001":
            raise RuntimeError("something no one expected")
        return httpx.Response(200, json={"session_key": key, "status": "IDLE"})

    async def call() -> dict[str, Outcome]:
        async with PaveClient(base_url="https://pave.test/v1", credentials=CREDENTIALS,
                              transport=httpx.MockTransport(answer)) as client:
            return await fetch_sessions(client, KEYS[:3], concurrency=3)

    outcomes = asyncio.run(call())
    failed = outcomes["KEY-001"]
    assert isinstance(failed, PaveError) and "RuntimeError" in str(failed)
    assert all(isinstance(outcomes[k], SessionSnapshot) for k in ("KEY-000", "KEY-002"))


def test_a_rate_limit_that_cannot_be_checked_gives_the_keys_back() -> None:
    class Broken(PaveRateLimit):
        async def acquire(self, *, until: float | None = None) -> bool:
            raise ConnectionError("Redis is gone")

    pave = CountingPave(200)
    outcomes = fetch_all(pave, KEYS[:5], concurrency=5,
                         rate_limit=Broken(5, MemoryStorage()))
    assert pave.requests == 0
    assert all(isinstance(o, NotAsked) and "could not be checked" in o.reason
               for o in outcomes.values())

"""The PAVE client a worker thread keeps: one event loop and one connection pool."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence

from worker.config import Settings
from worker.pave.auth import credentials_from
from worker.pave.client import PaveClient
from worker.pave.fetching import Outcome, fetch_sessions
from worker.pave.gate import account_gate
from worker.pave.ratelimit import rate_limit_from

log = logging.getLogger(__name__)


class PollRuntime:
    """One event loop and one keep-alive PAVE client, kept for the life of a worker thread.

    The client's connection pool belongs to the loop that created it, so a fresh
    `asyncio.run()` per task could not reuse its connections; an `asyncio.Runner` kept
    open can.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runner = asyncio.Runner()
        self._client: PaveClient | None = None
        self._rate_limit = rate_limit_from(settings)
        self._gate = account_gate("default", auth_pause=settings.auth_pause,
                                  rate_limit_pause=settings.rate_limit_pause)

    def fetch(self, keys: Sequence[str]) -> dict[str, Outcome]:
        return self._runner.run(self._fetch(keys))

    async def _fetch(self, keys: Sequence[str]) -> dict[str, Outcome]:
        if self._client is None:
            self._client = PaveClient(
                base_url=self.settings.pave_api_url,
                credentials=credentials_from(self.settings),
                timeout=self.settings.pave_timeout,
                max_connections=self.settings.poll_concurrency,
            )
        return await fetch_sessions(
            self._client, keys, concurrency=self.settings.poll_concurrency,
            with_results=self.settings.fetch_results, rate_limit=self._rate_limit,
            # The other half of the lease is for recording the batch.
            budget=self.settings.lease_seconds / 2, gate=self._gate,
        )

    def close(self) -> None:
        if self._client is not None:
            self._runner.run(self._client.aclose())
        self._runner.close()


_local = threading.local()
_opened: list[tuple[int, PollRuntime]] = []  # (pid, runtime), so shutdown can close them
_opened_lock = threading.Lock()


def poll_runtime(settings: Settings) -> PollRuntime:
    """This thread's runtime; a forked child (Celery prefork) makes its own."""
    runtime: PollRuntime | None = getattr(_local, "runtime", None)
    if runtime is None or getattr(_local, "pid", None) != os.getpid():
        runtime = PollRuntime(settings)
        _local.runtime = runtime
        _local.pid = os.getpid()
        with _opened_lock:
            _opened.append((os.getpid(), runtime))
    return runtime


def close_poll_runtimes() -> None:
    """Close this process's runtimes when the worker stops (their threads are idle by
    then): connections end cleanly instead of aiohttp reporting them unclosed."""
    with _opened_lock:
        ours = [runtime for pid, runtime in _opened if pid == os.getpid()]
        _opened.clear()
    for runtime in ours:
        try:
            runtime.close()
        except Exception:  # shutting down: a runtime that will not close is no reason to hang
            log.debug("a poll runtime did not close cleanly", exc_info=True)

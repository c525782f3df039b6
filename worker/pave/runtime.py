"""The PAVE clients a worker thread keeps: one event loop, one connection pool per account."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping, Sequence

from worker.accounts import Account, Accounts
from worker.config import Settings
from worker.errors import AccountNotConfigured
from worker.pave.auth import credentials_from
from worker.pave.client import PaveClient
from worker.pave.fetching import Outcome, fetch_sessions
from worker.pave.gate import account_gate
from worker.pave.ratelimit import PaveRateLimit, rate_limit_from

log = logging.getLogger(__name__)


class PollRuntime:
    """One event loop, and per account one keep-alive PAVE client, kept for the life of a
    worker thread.

    The client's connection pool belongs to the loop that created it, so a fresh
    `asyncio.run()` per task could not reuse its connections; an `asyncio.Runner` kept
    open can. A client is made the first time its account is polled: a worker of a
    dealer group does not open thirty pools it never uses.
    """

    def __init__(self, settings: Settings, accounts: Accounts) -> None:
        self.settings = settings
        self.accounts = accounts
        self._runner = asyncio.Runner()
        self._clients: dict[str, PaveClient] = {}
        self._rate_limits: dict[str, PaveRateLimit | None] = {}

    @property
    def opened_accounts(self) -> list[str]:
        """The accounts this thread has a PAVE client for: those it has polled."""
        return sorted(self._clients)

    def fetch(self, keys_by_account: Mapping[str, Sequence[str]]) -> dict[str, Outcome]:
        """Each account's keys asked at the same time, each with its own client."""
        outcomes: dict[str, Outcome] = {}
        asked: list[tuple[Account, Sequence[str]]] = []
        for name, keys in keys_by_account.items():
            account = self.accounts.get(name)
            if account is None:
                # Tracked under an account since taken out of the settings: nothing to
                # ask PAVE with. Refused credentials pause that account alone, loudly.
                refused = AccountNotConfigured(f"no account {name!r} in the settings")
                outcomes.update((key, refused) for key in keys)
            else:
                asked.append((account, keys))
        if asked:
            outcomes.update(self._runner.run(self._fetch_all(asked)))
        return outcomes

    async def _fetch_all(self, asked: list[tuple[Account, Sequence[str]]]
                         ) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        for answered in await asyncio.gather(*(self._fetch(account, keys)
                                               for account, keys in asked)):
            outcomes.update(answered)
        return outcomes

    async def _fetch(self, account: Account, keys: Sequence[str]) -> dict[str, Outcome]:
        client = self._clients.get(account.name)
        if client is None:
            client = self._clients[account.name] = PaveClient(
                base_url=account.api_url,
                credentials=credentials_from(account),
                timeout=self.settings.pave_timeout,
                max_connections=self.settings.poll_concurrency,
            )
            self._rate_limits[account.name] = rate_limit_from(self.settings, account)
        return await fetch_sessions(
            client, keys, concurrency=self.settings.poll_concurrency,
            with_results=self.settings.fetch_results,
            rate_limit=self._rate_limits[account.name],
            # The other half of the lease is for recording the batch.
            budget=self.settings.lease_seconds / 2,
            gate=account_gate(account.name, auth_pause=self.settings.auth_pause,
                              rate_limit_pause=self.settings.rate_limit_pause),
            account=account.name,
        )

    def close(self) -> None:
        for client in self._clients.values():
            self._runner.run(client.aclose())
        self._runner.close()


_local = threading.local()
_opened: list[tuple[int, PollRuntime]] = []  # (pid, runtime), so shutdown can close them
_opened_lock = threading.Lock()


def poll_runtime(settings: Settings, accounts: Accounts) -> PollRuntime:
    """This thread's runtime; a forked child (Celery prefork) makes its own."""
    runtime: PollRuntime | None = getattr(_local, "runtime", None)
    if runtime is None or getattr(_local, "pid", None) != os.getpid():
        runtime = PollRuntime(settings, accounts)
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

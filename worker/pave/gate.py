"""The account's gate in this process: closed by PAVE's 429 or refused credentials.

Every worker thread of a process shares it, so the first such answer any of them gets
stops the others before their next request, not at their next batch. Between processes
the pause travels through the database (`worker.tracking.account`): a batch reads it
before it asks anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from worker.errors import PaveAuthError, PaveError, PaveRateLimited


def is_account_error(error: object) -> bool:
    """Errors about the PAVE account as a whole: throttling and refused credentials."""
    return isinstance(error, PaveRateLimited | PaveAuthError)


def pause_seconds(errors: list[PaveError], *, auth_pause: float,
                  rate_limit_pause: float) -> float:
    """How long these account errors pause the account: AUTH_PAUSE for refused
    credentials, else the longest `Retry-After` PAVE gave (RATE_LIMIT_PAUSE without one)."""
    if any(isinstance(error, PaveAuthError) for error in errors):
        return auth_pause
    waits = [error.retry_after for error in errors
             if isinstance(error, PaveRateLimited) and error.retry_after is not None]
    return max(waits) if waits else rate_limit_pause


class AccountGate:
    def __init__(self, *, auth_pause: float, rate_limit_pause: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._auth_pause = auth_pause
        self._rate_limit_pause = rate_limit_pause
        self._clock = clock
        self._lock = threading.Lock()
        self._closed_until = 0.0

    def is_open(self) -> bool:
        return self._clock() >= self._closed_until

    def seconds_closed(self) -> float:
        """How long until the gate opens again (0 when it is open)."""
        return max(0.0, self._closed_until - self._clock())

    def close_for(self, error: PaveError) -> None:
        """Close the gate for the pause this account error calls for; a longer closing
        already running is kept."""
        seconds = pause_seconds([error], auth_pause=self._auth_pause,
                                rate_limit_pause=self._rate_limit_pause)
        with self._lock:
            self._closed_until = max(self._closed_until, self._clock() + seconds)


_gates: dict[str, AccountGate] = {}
_gates_lock = threading.Lock()


def account_gate(account: str, *, auth_pause: float, rate_limit_pause: float) -> AccountGate:
    """This process's gate for `account`, made on first use."""
    with _gates_lock:
        gate = _gates.get(account)
        if gate is None:
            gate = _gates[account] = AccountGate(auth_pause=auth_pause,
                                                 rate_limit_pause=rate_limit_pause)
        return gate


def forget_gates() -> None:
    """Drop this process's gates: each test starts with every account's gate open."""
    with _gates_lock:
        _gates.clear()

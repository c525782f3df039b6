"""The outcome of one delivery attempt, whatever the kind of target."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class AttemptResult:
    delivered: bool
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    # 410 Gone, or a target that cannot work as configured: retrying cannot help.
    permanent: bool = False


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started`, a `time.perf_counter()` reading."""
    return (time.perf_counter() - started) * 1000

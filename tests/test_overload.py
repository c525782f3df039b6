"""An operator's bad day, short: `scripts/overload.py` at a small size, its goals asserted.

The README's figures come from the full run. Each part runs a real `pave-tracker run` on
PostgreSQL + Redis against a fake PAVE that counts every request; this uses a database
and a Redis database of its own (the script drops and flushes them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import require_local_services

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/9"
THREADS, POLL_CONCURRENCY = 4, 20


def run_overload(tmp_path: Path, *options: str) -> dict[str, Any]:
    require_local_services(REDIS_URL, "the overload run")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "overload.py"), *options,
         "--database", "pave_tracker_overload_ci", "--redis-url", REDIS_URL,
         "--folder", str(tmp_path / "overload")],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results: dict[str, Any] = json.loads((tmp_path / "overload" / "results.json").read_text())
    return results


def test_refused_credentials_and_429_stop_requests_at_what_was_in_flight(
    tmp_path: Path
) -> None:
    results = run_overload(tmp_path, "--only", "auth,throttle", "--auth-sessions", "2000",
                           "--auth-seconds", "8", "--throttle-sessions", "1000",
                           "--throttle-seconds", "14", "--retry-after", "4")
    refused = results["auth: PAVE refuses the credentials"]
    # Of 2,000 due, only what the worker's threads had in flight when PAVE first said no.
    assert 0 < refused["requests"] <= THREADS * POLL_CONCURRENCY
    throttled = results["throttle: PAVE answers 429, Retry-After 4"]
    assert len(throttled["requests per pause"]) >= 2  # the pause ended, and began again
    assert all(0 < n <= THREADS * POLL_CONCURRENCY for n in throttled["requests per pause"])


def test_a_backlog_ends_no_healthy_session_and_polls_each_in_turn(tmp_path: Path) -> None:
    """4 threads x 1 request at a time x 0.5 s = 8 polls/s; 200 sessions due every
    1.25 s ask for 160/s: twenty times too much, for a minute, with an 8 s lease."""
    results = run_overload(tmp_path, "--only", "backlog", "--backlog-sessions", "200",
                           "--backlog-seconds", "60", "--poll-interval", "1.25",
                           "--backlog-concurrency", "1", "--lease-seconds", "8",
                           "--dispatch-interval", "1", "--batch-size", "4")
    backlog = results["backlog: workers far too slow for the load"]
    assert backlog["sessions that left active"] == 0
    assert backlog["sessions never polled"] == 0
    period = backlog["fair period, s (sessions / polls per second)"]
    assert backlog["worst gap between two polls of a session, s"] <= 2 * period
    # A tick's worth of messages waits, not the whole backlog (50 batches of 4).
    assert backlog["broker queue, messages: max"] <= 20

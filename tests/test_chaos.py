"""The chaos run, short: workers killed, Redis and PostgreSQL restarted, PAVE failing.

It restarts this machine's PostgreSQL and Redis, so it runs only where REQUIRE_SERVICES=1
(CI) or CHAOS=1 says that is fine. The full run is `python scripts/chaos.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(os.environ.get("REQUIRE_SERVICES") != "1" and os.environ.get("CHAOS") != "1",
                    reason="restarts PostgreSQL and Redis: set CHAOS=1 (CI sets "
                           "REQUIRE_SERVICES=1)")
def test_short_chaos_run_survives(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos.py"), "--sessions", "12",
         "--duration", "15", "--kill-every", "2.5", "--settle", "90", "--speed", "1",
         "--database", "pave_tracker_chaos_ci", "--redis-url", "redis://127.0.0.1:6379/12",
         "--folder", str(tmp_path / "chaos")],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| every terminal event delivered once | ok |" in done.stdout
    assert "| PostgreSQL restart | 1 |" in done.stdout

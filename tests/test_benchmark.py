"""The benchmark still runs: a tiny version of `scripts/benchmark.py`, as CI's proof.

It measures nothing worth reading at this size; the README's numbers come from the full
run. It needs PostgreSQL and Redis like the other service tests, and a database and a
Redis database of its own (it drops and flushes them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_local_services

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/11"


def test_a_tiny_benchmark_runs_every_part(tmp_path: Path) -> None:
    require_local_services(REDIS_URL, "the benchmark")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--sessions", "400",
         "--naive-sessions", "100", "--ceiling-requests", "400", "--tracked", "4000",
         "--due", "400", "--tick-repeats", "2", "--latency-sessions", "4",
         "--poll-interval", "1", "--dispatch-interval", "0.2",
         "--database", "pave_tracker_bench_ci", "--redis-url", REDIS_URL,
         "--folder", str(tmp_path / "bench")],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())
    measures = [row["measure"] for row in rows]
    for part in ("1. loopback ceiling", "2. pave-tracker end to end", "3. naive baseline",
                 "4. end to end / ceiling", "4. end to end / naive", "5. one beat tick",
                 "6. peak RSS", "7. detection latency"):
        assert any(measure.startswith(part) for measure in measures), part
    assert "| measure | value | target |" in done.stdout
    # Every figure is a measurement: a rate above zero, a size, a time.
    values = {row["measure"].split(":")[0].split(",")[0]: row["value"] for row in rows}
    assert float(values["2. pave-tracker end to end"].split()[0].replace(",", "")) > 0
    assert float(values["6. peak RSS of a worker process"].split()[0]) > 20

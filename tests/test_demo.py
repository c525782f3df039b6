"""`pave-tracker demo` as a newcomer runs it: an empty folder, a clean environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.processes import TRACKER, live_processes_in_group


def test_demo_runs_and_leaves_nothing_behind(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(temporary)}
    process = subprocess.Popen([TRACKER, "demo", "--sessions", "6"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "summary: 6 sessions: 3 COMPLETE, 1 EXPIRED, 1 INVALID, 1 not_found" in output
    # Six outcomes, and DEMO-REMINDED's customer reminded and stalled on the way.
    assert "8 callbacks received" in output and "0 refused signatures" in output
    assert "callback session.completed received, signature verified" in output
    assert "DEMO-REMINDED: callback session.reminder received" in output
    assert "DEMO-REMINDED: callback session.stalled received" in output
    assert "demo finished" in output
    assert not live_processes_in_group(process.pid), "the demo left processes running"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tmp"]
    assert list(temporary.iterdir()) == [], "the demo left files behind"

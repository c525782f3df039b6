"""A real `pave-tracker run` process polls the simulator until a dozen lifecycles end.

Once on the embedded default (SQLite file and SQL broker in an empty folder, nothing
configured but PAVE) and once on PostgreSQL + Redis. Each session's recorded history
must be exactly the statuses the simulator served it, in order.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.processes import command, start_run, stop, tracker_env, wait_until
from worker.pave.simulator import Simulator, scaled

FAST = 0.25
# key: (lifecycle, not_found_for, trailing_comma, expected tracking, expected final status)
SESSIONS: dict[str, tuple[list[tuple[str, float | None]], float, bool, str, str | None]] = {
    "E2E-COMPLETE-1": (scaled("complete", FAST), 0, False, "done", "COMPLETE"),
    "E2E-COMPLETE-2": (scaled("complete", FAST * 1.5), 0, True, "done", "COMPLETE"),
    "E2E-COMPLETE-3": (scaled("complete", FAST * 0.5), 0, False, "done", "COMPLETE"),
    "E2E-SKIPS": (scaled("skips_to_complete", FAST), 0, False, "done", "COMPLETE"),
    "E2E-EXPIRED": (scaled("expired", FAST), 0, False, "done", "EXPIRED"),
    "E2E-INVALID": (scaled("invalid", FAST), 0, True, "done", "INVALID"),
    "E2E-UNKNOWN": (scaled("unknown_status", FAST), 0, False, "done", "COMPLETE"),
    "E2E-LATE": (scaled("complete", FAST), 1.0, False, "done", "COMPLETE"),
    "E2E-INSTANT": ([("COMPLETE", None)], 0, False, "done", "COMPLETE"),
    "E2E-IDLE": (scaled("idle_forever", FAST), 0, False, "active", "IDLE"),
}
NEVER_FOUND = ["E2E-MISSING-1", "E2E-MISSING-2"]
WARM_UP = "E2E-WARM-UP"

def run_lifecycles(simulator: Simulator, env: dict[str, str], folder: Path,
                   processes: list[subprocess.Popen[bytes]]) -> None:
    process = start_run(env, folder, processes)

    # Warm up: the lifecycles start only once the tracker is really polling.
    simulator.add_session(WARM_UP, [("IDLE", None)])
    command(env, folder, "track", WARM_UP)
    wait_until(lambda: simulator.served(WARM_UP) or process.poll() is not None, 60,
               "the tracker never polled")
    assert process.poll() is None, (folder / "run.log").read_text()[-3000:]

    for key, (lifecycle, not_found_for, trailing_comma, _, _) in SESSIONS.items():
        simulator.add_session(key, lifecycle, not_found_for=not_found_for,
                              trailing_comma=trailing_comma)
    command(env, folder, "track", *SESSIONS, *NEVER_FOUND, "--meta", "source=e2e")

    def settled() -> bool:
        rows = json.loads(command(env, folder, "list", "--json"))
        return all(row["tracking"] != "active" for row in rows
                   if row["session_key"] not in ("E2E-IDLE", WARM_UP))

    wait_until(settled, 90, "sessions still active: "
               + command(env, folder, "list"))

    finished = [key for key, spec in SESSIONS.items() if spec[3] == "done"] + NEVER_FOUND
    answers_before = {key: len(simulator.served(key)) for key in finished}
    idle_before = len(simulator.served("E2E-IDLE"))
    time.sleep(2.0)  # ten dispatch intervals

    for key, (_, _, _, tracking, status) in SESSIONS.items():
        shown = json.loads(command(env, folder, "show", key, "--json"))
        served = simulator.session(key).distinct_statuses_served()
        assert [step["to"] for step in shown["history"]] == served, key
        assert shown["history"][0]["from"] is None
        assert [step["from"] for step in shown["history"][1:]] == served[:-1]
        assert shown["status"] == status, key
        assert shown["tracking"] == tracking, key
        assert shown["metadata"] == {"source": "e2e"}
        assert shown["polls"] >= len(shown["history"])
        if tracking == "done":
            assert shown["next_poll_at"] is None
    for key in NEVER_FOUND:
        shown = json.loads(command(env, folder, "show", key, "--json"))
        assert shown["tracking"] == "not_found" and shown["history"] == []
        assert shown["last_error"].startswith("not_found")

    completed = json.loads(command(env, folder, "show", "E2E-COMPLETE-1", "--json"))
    assert completed["vehicle"]["odom_reading"] == 100945
    assert completed["inspect_started_at"] and completed["inspect_ended_at"]

    # Finished sessions are no longer polled; the one still IDLE is.
    assert {key: len(simulator.served(key)) for key in finished} == answers_before
    assert len(simulator.served("E2E-IDLE")) > idle_before

    stop(process)


def test_embedded_default(simulator_for_e2e: tuple[Simulator, str], tmp_path: Path,
                          tracker_process: list[subprocess.Popen[bytes]]) -> None:
    simulator, url = simulator_for_e2e
    run_lifecycles(simulator, tracker_env(url), tmp_path, tracker_process)
    assert (tmp_path / "pave-tracker.db").exists()
    assert (tmp_path / "pave-tracker-broker.db").exists()


def test_postgresql_and_redis(simulator_for_e2e: tuple[Simulator, str], tmp_path: Path,
                              pg_url: str, redis_url: str,
                              tracker_process: list[subprocess.Popen[bytes]]) -> None:
    simulator, url = simulator_for_e2e
    env = tracker_env(url, DATABASE_URL=pg_url, REDIS_URL=redis_url)
    run_lifecycles(simulator, env, tmp_path, tracker_process)
    assert not (tmp_path / "pave-tracker.db").exists()

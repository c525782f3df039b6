"""Running real `pave-tracker` processes from tests, and making sure none outlives them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from worker.processes import live_processes_in_group

TRACKER = str(Path(sys.executable).with_name("pave-tracker"))


def tracker_env(simulator_url: str, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PAVE_", "DATABASE_", "BROKER_", "REDIS_", "POLL_"))}
    env.update({
        "PAVE_API_URL": simulator_url,
        "PAVE_API_KEY": "sim-api-key",
        "PAVE_USERNAME": "sim-user",
        "PAVE_API_SECRET": "sim-api-secret",
        "POLL_INTERVAL": "0.2",
        "POLL_INTERVAL_IDLE": "0.3",
        "DISPATCH_INTERVAL": "0.2",
        "NOT_FOUND_GRACE": "2",
        "LEASE_SECONDS": "15",
        "PAVE_TIMEOUT": "5",
        **extra,
    })
    return env


def command(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run([TRACKER, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def start_run(env: dict[str, str], folder: Path, processes: list[subprocess.Popen[bytes]],
              *, log_name: str = "run.log", loglevel: str = "info") -> subprocess.Popen[bytes]:
    """`pave-tracker run` in its own process group, its output in `folder/log_name`."""
    log = (folder / log_name).open("ab")
    process = subprocess.Popen([TRACKER, "run", "--loglevel", loglevel],
                               env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    processes.append(process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown: SIGTERM to the main process takes every child with it."""
    process.terminate()
    assert process.wait(timeout=30) == 0
    wait_until(lambda: not live_processes_in_group(process.pid), 10, "processes left behind")


def wait_until(condition: Callable[[], object], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(message)



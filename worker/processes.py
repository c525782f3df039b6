"""Stopping a child process and everything it started, and seeing what is left."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def stop_process_group(process: subprocess.Popen[bytes], *, timeout: float = 20) -> None:
    """SIGTERM to the leader (a worker's warm shutdown stops its own children), SIGKILL if it
    does not go in time, then SIGKILL to whatever of its process group is left.

    The leader must have been started with `start_new_session=True`.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def live_processes_in_group(group: int) -> list[int]:
    """Processes of this process group that still run (zombies awaiting init excluded)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, pgid = fields[0], int(fields[2])
        if pgid == group and state != "Z":
            alive.append(int(stat.parent.name))
    return alive

"""Stopping a child process and everything it started."""

from __future__ import annotations

import os
import signal
import subprocess


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

"""Prometheus metrics from a real `pave-tracker run`, with a prefork pool."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import TRACKER, command, stop, tracker_env, wait_until
from tests.receivers import free_port
from worker.pave.simulator import Simulator

DEFAULT = ("account", "default")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def own_outward_address() -> str:
    """This machine's address on its way out (a UDP "connect" sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        address: str = probe.getsockname()[0]
    assert not ipaddress.ip_address(address).is_loopback, "no outward address to test with"
    return address


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def test_prefork_children_count_into_one_scrape(
    simulator_for_e2e: tuple[Simulator, str], tmp_path: Path,
    tracker_process: list[subprocess.Popen[bytes]],
) -> None:
    simulator, url = simulator_for_e2e
    port = free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = tracker_env(url, METRICS_PORT=str(port), TMPDIR=str(scratch))
    for key in ("M-1", "M-2", "M-3"):
        simulator.add_session(key, [("IDLE", 0.5), ("COMPLETE", None)],
                              starts_on_first_request=True)
    command(env, tmp_path, "track", "M-1", "M-2", "M-3", "M-404")
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [TRACKER, "run", "--pool", "prefork",
         "--concurrency", "2"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    tracker_process.append(process)

    def settled() -> bool:
        try:
            samples = scrape(port)
        except httpx.HTTPError:
            return False
        completions = ("pave_tracker_transitions_total", (DEFAULT, ("status", "COMPLETE")))
        return samples.get(completions) == 3
    wait_until(settled, 60, "the metrics never showed three completions")
    samples = scrape(port)
    # Served on loopback only, by default (METRICS_HOST): no auth, so not on the network.
    assert reachable("127.0.0.1", port) and not reachable(own_outward_address(), port)
    def metrics_folders() -> list[Path]:
        return list(scratch.glob("pave-tracker-metrics-*"))

    assert len(metrics_folders()) == 1
    stop(process)
    assert metrics_folders() == []  # made as the worker started, removed as it stopped
    assert samples[("pave_tracker_transitions_total", (DEFAULT, ("status", "IDLE")))] == 3
    assert samples[("pave_tracker_polls_total", (DEFAULT, ("outcome", "ok")))] >= 6
    assert samples[("pave_tracker_polls_total", (DEFAULT, ("outcome", "not_found")))] >= 1
    assert samples[("pave_tracker_poll_seconds_count", ())] >= 7
    assert ("pave_tracker_due_sessions", ()) in samples
    assert ("pave_tracker_oldest_due_seconds", ()) in samples

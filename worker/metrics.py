"""Prometheus metrics, served by the worker on METRICS_PORT.

They work with every pool: `worker.celery_app` switches prometheus_client to its
multiprocess mode (a folder of shared files) before anything is measured, so a prefork
pool's children count into the same numbers the main process serves.

| metric | type | labels |
| --- | --- | --- |
| pave_tracker_polls_total | counter | account; outcome: ok, not_found, auth, |
| | | rate_limited, server_error, transport, bad_payload |
| pave_tracker_poll_seconds | histogram | (one PAVE request) |
| pave_tracker_transitions_total | counter | account; status: the status moved to |
| pave_tracker_deliveries_total | counter | target, outcome: delivered, failed |
| pave_tracker_due_sessions | gauge | sessions due and not leased after the last tick |
| pave_tracker_oldest_due_seconds | gauge | how late the most overdue of them is |
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

POLLS = Counter("pave_tracker_polls", "PAVE polls by account and outcome",
                ["account", "outcome"])
POLL_SECONDS = Histogram(
    "pave_tracker_poll_seconds", "Time one PAVE request took",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TRANSITIONS = Counter("pave_tracker_transitions", "Observed status changes",
                      ["account", "status"])
DELIVERIES = Counter("pave_tracker_deliveries", "Delivery attempts by target and outcome",
                     ["target", "outcome"])
DUE_SESSIONS = Gauge("pave_tracker_due_sessions", "Sessions due and not yet leased",
                     multiprocess_mode="mostrecent")
OLDEST_DUE = Gauge("pave_tracker_oldest_due_seconds", "Lateness of the most overdue session",
                   multiprocess_mode="mostrecent")


def serve_metrics(host: str, port: int, multiprocess_dir: str) -> None:
    """Serve /metrics on `host`:`port`, summing what every process of this worker wrote."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)


def forget_process(pid: int, multiprocess_dir: str) -> None:
    """A pool child exited: drop its live gauges (counters keep their counts)."""
    multiprocess.mark_process_dead(pid, path=multiprocess_dir)  # type: ignore[no-untyped-call]

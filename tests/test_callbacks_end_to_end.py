"""Real `pave-tracker run` processes deliver callbacks to real receivers on loopback.

A webhook receiver that verifies each request with `standardwebhooks` and refuses the
first attempt of every message, an aiosmtpd mailbox, the simulator with results. Then a
worker killed with SIGKILL in the middle of a delivery, and a fresh one that finishes it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import (
    command,
    live_processes_in_group,
    start_run,
    stop,
    tracker_env,
    wait_until,
)
from tests.receivers import SECRET, WebhookReceiver, smtp_server
from worker.pave.simulator import Simulator, scaled, serving

SMTP_PASSWORD = "smtp-pass-Zq81"
COMPLETING = ["CB-COMPLETE-1", "CB-COMPLETE-2", "CB-COMPLETE-3", "CB-SKIPS"]
WITH_EMAIL = {"CB-COMPLETE-1": "jane@example.com", "CB-COMPLETE-2": "omar@example.com"}


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[WebhookReceiver, str]]:
    receiver = WebhookReceiver(fail_first=1)
    with serving(receiver.app()) as url:
        yield receiver, url


def parse_time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def callback_env(simulator_url: str, hook_url: str, smtp_port: int | None = None,
                 **extra: str) -> dict[str, str]:
    email = {} if smtp_port is None else {
        "SMTP_URL": f"smtp://desk:{SMTP_PASSWORD}@127.0.0.1:{smtp_port}",
        "EMAIL_FROM": "service@dealer.example",
        "EMAIL_TO": "desk@dealer.example",
    }
    return tracker_env(simulator_url, **{
        "WEBHOOK_URL": f"{hook_url}/hook",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_EVENTS": "session.completed,session.expired,tracking.not_found",
        "DELIVERY_RETRY_SCHEDULE": "0.3,0.3,0.3,0.3",
        "FETCH_RESULTS": "true",
        **email,
        **extra,
    })


@pytest.mark.parametrize("backend", ["embedded", "postgresql+redis"])
def test_every_event_reaches_every_target_once(
    backend: str, request: pytest.FixtureRequest, simulator_for_e2e: tuple[Simulator, str],
    webhook_receiver: tuple[WebhookReceiver, str], tmp_path: Path,
    tracker_process: list[subprocess.Popen[bytes]],
) -> None:
    simulator, simulator_url = simulator_for_e2e
    receiver, hook_url = webhook_receiver
    extra = {}
    if backend != "embedded":
        extra = {"DATABASE_URL": request.getfixturevalue("pg_url"),
                 "REDIS_URL": request.getfixturevalue("redis_url")}
    with smtp_server(username="desk", password=SMTP_PASSWORD) as (mailbox, smtp_port):
        env = callback_env(simulator_url, hook_url, smtp_port, **extra)
        if backend != "embedded":
            command(env, tmp_path, "db", "upgrade")
        process = start_run(env, tmp_path, tracker_process)
        simulator.add_session("CB-WARM-UP", [("IDLE", None)])
        command(env, tmp_path, "track", "CB-WARM-UP")
        wait_until(lambda: simulator.served("CB-WARM-UP"), 60, "the tracker never polled")

        for key in COMPLETING[:3]:
            simulator.add_session(key, scaled("complete", 0.2))
        simulator.add_session("CB-SKIPS", scaled("skips_to_complete", 0.2))
        simulator.add_session("CB-EXPIRED", scaled("expired", 0.2))
        for key, address in WITH_EMAIL.items():
            command(env, tmp_path, "track", key, "--email", address)
        command(env, tmp_path, "track", "CB-COMPLETE-3", "CB-SKIPS", "CB-EXPIRED", "CB-GHOST")

        expected = {(key, "session.completed") for key in COMPLETING} | {
            ("CB-EXPIRED", "session.expired"), ("CB-GHOST", "tracking.not_found")}

        def all_delivered() -> bool:
            got = {(r.body["data"]["session_key"], r.body["type"])
                   for r in receiver.unique().values()}
            rows = json.loads(command(env, tmp_path, "deliveries", "--json"))
            return got == expected and len(mailbox.messages) == len(COMPLETING) and all(
                row["state"] == "delivered" for row in rows)

        wait_until(all_delivered, 90, "not everything was delivered: "
                   + command(env, tmp_path, "deliveries"))
        time.sleep(1.0)  # five ticks more: nothing may arrive twice under a new id
        log_text = (tmp_path / "run.log").read_text()
        outputs = [command(env, tmp_path, "show", key, "--json")
                   for key in [*COMPLETING, "CB-EXPIRED", "CB-GHOST"]]
        outputs.append(command(env, tmp_path, "deliveries", "--json"))
        stop(process)

    # Every message once per webhook-id, and each id tried twice (the first refused).
    assert receiver.rejected == []
    unique = receiver.unique()
    assert len(unique) == len(expected)
    assert all(receiver.ids().count(webhook_id) == 2 for webhook_id in unique)

    latencies = []
    for shown in map(json.loads, outputs[: len(COMPLETING)]):
        assert {(d["target"], d["state"]) for d in shown["deliveries"]} == {
            ("webhook", "delivered"), ("email", "delivered")}
        completed = next(r for r in unique.values()
                         if r.body["data"]["session_key"] == shown["session_key"])
        assert completed.body["data"]["results"]["inspection"]["worst_grade"] == 3
        assert completed.body["data"]["status"] == "COMPLETE"
        observed = parse_time(shown["history"][-1]["observed_at"])
        latencies.append(completed.at - observed)
    latencies.sort()
    print(f"\n[{backend}] observed COMPLETE -> first webhook attempt arrived: "
          f"min {latencies[0] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms "
          f"(DISPATCH_INTERVAL 0.2 s, {len(latencies)} sessions)")

    recipients = sorted(message["To"] for message in mailbox.messages)
    assert recipients == sorted([*WITH_EMAIL.values(), "desk@dealer.example",
                                 "desk@dealer.example"])
    assert all(message["Subject"].startswith("Inspection complete: 2017 Nissan Rogue")
               for message in mailbox.messages)

    for text in [log_text, *outputs]:
        assert SECRET not in text and SECRET.removeprefix("whsec_") not in text
        assert SMTP_PASSWORD not in text


def test_a_worker_killed_mid_delivery_leaves_it_to_be_redelivered(
    simulator_for_e2e: tuple[Simulator, str], tmp_path: Path,
    tracker_process: list[subprocess.Popen[bytes]],
) -> None:
    simulator, simulator_url = simulator_for_e2e
    receiver = WebhookReceiver(hang_first=6)  # the first attempt never gets its answer
    with serving(receiver.app()) as hook_url:
        env = callback_env(simulator_url, hook_url, PAVE_TIMEOUT="1",
                           LEASE_SECONDS="3", WEBHOOK_EVENTS="session.completed")
        simulator.add_session("KILL-1", [("COMPLETE", None)])
        command(env, tmp_path, "track", "KILL-1")
        first = start_run(env, tmp_path, tracker_process, log_name="first.log")
        wait_until(lambda: receiver.received, 60, "the first attempt never arrived")

        os.killpg(first.pid, signal.SIGKILL)  # worker, pool children and beat at once
        first.wait(timeout=10)
        wait_until(lambda: not live_processes_in_group(first.pid), 10, "children survived")
        (webhook_id,) = receiver.ids()
        state = json.loads(command(env, tmp_path, "deliveries", "--json"))
        assert [row["state"] for row in state if row["target"] == "webhook"] == ["pending"]

        second = start_run(env, tmp_path, tracker_process, log_name="second.log")
        wait_until(lambda: len(receiver.received) >= 2, 60, "never redelivered")
        wait_until(lambda: all(row["state"] == "delivered" for row in json.loads(
            command(env, tmp_path, "deliveries", "--json"))), 30, "not marked delivered")
        stop(second)
    assert set(receiver.ids()) == {webhook_id}
    shown = json.loads(command(env, tmp_path, "show", "KILL-1", "--json"))
    webhook = next(d for d in shown["deliveries"] if d["target"] == "webhook")
    assert webhook["id"] == webhook_id and webhook["attempts"] == 1

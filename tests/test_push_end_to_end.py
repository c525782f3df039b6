"""PAVE's push as the fast path: real `run` and `serve` processes, polls a minute apart,
and a completion that still reaches the webhook within about a second."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from tests.processes import TRACKER, command, start_run, stop, tracker_env, wait_until
from tests.receivers import SECRET, WebhookReceiver, free_port
from worker.pave.simulator import Simulator, serving

API_TOKEN = "api-token-0123456789"
PUSH_TOKEN = "push-token-0123456789"


def test_a_pushed_completion_is_delivered_long_before_the_next_poll(
    simulator_for_e2e: tuple[Simulator, str], tmp_path: Path,
    tracker_process: list[subprocess.Popen[bytes]],
) -> None:
    simulator, simulator_url = simulator_for_e2e
    receiver = WebhookReceiver()
    with serving(receiver.app()) as hook_url:
        port = free_port()
        env = tracker_env(simulator_url, POLL_INTERVAL="60", POLL_INTERVAL_IDLE="60",
                          DISPATCH_INTERVAL="1", WEBHOOK_URL=f"{hook_url}/hook",
                          WEBHOOK_SECRET=SECRET, API_TOKENS=API_TOKEN,
                          PAVE_PUSH_TOKEN=PUSH_TOKEN)
        worker = start_run(env, tmp_path, tracker_process)
        server = subprocess.Popen([TRACKER, "serve", "--port", str(port)], env=env,
                                  cwd=tmp_path, stdout=(tmp_path / "serve.log").open("wb"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        tracker_process.append(server)
        api = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(f"{api}/healthz"), 30, "the API never came up")
        command(env, tmp_path, "pave", "register-callbacks", f"{api}/pave/callbacks")
        assert {c["event"] for c in simulator.callbacks.values()} == {
            "SESSION:STATUS_CHANGE", "SESSION:COMPLETE"}

        simulator.add_session("PUSH-WARM-UP", [("IDLE", None)])
        command(env, tmp_path, "track", "PUSH-WARM-UP")
        wait_until(lambda: simulator.served("PUSH-WARM-UP"), 60, "the worker never polled")

        simulator.add_session("PUSH-1", [("IDLE", 3), ("COMPLETE", None)])
        tracked = httpx.post(f"{api}/sessions", json={"session_key": "PUSH-1"},
                             headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert tracked.json()["added"] == 1
        wait_until(lambda: receiver.received, 30, "the completion never arrived")
        arrived = receiver.received[0].at
        pushed = next(at for at, key, event in simulator.pushed
                      if key == "PUSH-1" and event == "SESSION:COMPLETE")
        shown = json.loads(command(env, tmp_path, "show", "PUSH-1", "--json"))
        server.terminate()
        server.wait(timeout=20)
        stop(worker)

    assert receiver.received[0].body["type"] == "session.completed"
    assert [step["to"] for step in shown["history"]] == ["IDLE", "COMPLETE"]
    assert shown["polls"] == 2  # the first poll, then the one the push started
    first_poll, second_poll = (time.mktime(time.strptime(step["observed_at"][:19],
                                                         "%Y-%m-%dT%H:%M:%S"))
                               for step in shown["history"])
    assert second_poll - first_poll < 30  # long before the next scheduled poll (60 s)
    print(f"\nPAVE pushed COMPLETE -> webhook arrived: {(arrived - pushed) * 1000:.0f} ms "
          f"(POLL_INTERVAL 60 s)")


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

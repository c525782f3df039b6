"""Issue #12: the simulator as an open relay. `simulate` beyond loopback, the control
API's key, callback URLs, and what the simulator stores, over a real server on loopback
and through the real command (with uvicorn.run recorded, so nothing binds beyond it)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from worker.cli import main
from worker.pave.auth import PaveCredentials
from worker.pave.simulator import (
    MAX_BODY_BYTES,
    MAX_KEY_LENGTH,
    MAX_LIFECYCLE_STEPS,
    Simulator,
    running_simulator,
    serving,
)

OWN_KEY = "own-key-5f1c0d"
OWN_SECRET = "own-secret-9a7e21"
OWN_TOKEN = "own-token-44b3c8"
ONE_STEP = {"lifecycle": [["IDLE", None]]}

Run = tuple[Any, dict[str, Any]]


@pytest.fixture
def uvicorn_runs(monkeypatch: pytest.MonkeyPatch) -> list[Run]:
    """Each uvicorn.run `simulate` asks for, recorded instead of run."""
    runs: list[Run] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: runs.append((app, options)))
    return runs


def simulate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`pave-tracker simulate --port 0 ARGS`: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--port", "0", *args])
    return int(exited.value.code or 0), capsys.readouterr().err


def headers_for(key: str, secret: str) -> dict[str, str]:
    return PaveCredentials(api_key=key, username="sim-user",
                           api_secret=secret).headers(dt.datetime.now(dt.UTC))


@pytest.fixture
def own_simulator() -> Iterator[tuple[Simulator, str]]:
    """A simulator with credentials of its own: (it, its base URL without /v1)."""
    simulator = Simulator(api_key=OWN_KEY, api_secret=OWN_SECRET)
    with running_simulator(simulator) as url:
        yield simulator, url.removesuffix("/v1")


# -- simulate beyond loopback -----------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "sim.example.com",
                                  "127.0.0.1.nip.io", "localhost.", ""])
def test_simulate_refuses_a_host_beyond_loopback_with_the_published_credentials(
    capsys: pytest.CaptureFixture[str], uvicorn_runs: list[Run], host: str,
) -> None:
    status, err = simulate(capsys, "--host", host)
    assert status == 2 and uvicorn_runs == [], err
    assert err.count("\n") == 1 and err.startswith("pave-tracker: error: --host "), err
    assert "beyond loopback" in err and "--api-key" in err and "--api-secret" in err


@pytest.mark.parametrize("credentials", [
    ["--api-key", OWN_KEY],                  # tokens signed with the published secret pass
    ["--api-secret", OWN_SECRET],            # the published key
    ["--api-token", OWN_TOKEN],              # the published secret still signs tokens
    ["--api-key", OWN_KEY, "--api-token", OWN_TOKEN],
    ["--api-key", "sim-api-key", "--api-secret", "sim-api-secret"],  # given, yet published
    ["--api-key", "", "--api-secret", OWN_SECRET],
    ["--api-key", OWN_KEY, "--api-secret", ""],
])
def test_only_a_key_and_secret_of_ones_own_open_a_host_beyond_loopback(
    capsys: pytest.CaptureFixture[str], uvicorn_runs: list[Run], credentials: list[str],
) -> None:
    status, err = simulate(capsys, "--host", "0.0.0.0", *credentials)
    assert status == 2 and uvicorn_runs == [], err
    assert err.count("\n") == 1, err
    for secret in (OWN_KEY, OWN_SECRET, OWN_TOKEN, "sim-api-secret"):
        assert secret not in err


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "LocalHost"])
def test_simulate_serves_loopback_with_the_published_credentials(
    capsys: pytest.CaptureFixture[str], uvicorn_runs: list[Run], host: str,
) -> None:
    status, err = simulate(capsys, "--host", host)
    assert status == 0, err
    ((_, options),) = uvicorn_runs
    assert options["host"] == host


def test_simulate_beyond_loopback_with_credentials_of_ones_own_guards_the_control_api(
    capsys: pytest.CaptureFixture[str], uvicorn_runs: list[Run],
) -> None:
    status, err = simulate(capsys, "--host", "0.0.0.0", "--api-key", OWN_KEY,
                           "--api-secret", OWN_SECRET)
    assert status == 0, err
    assert OWN_KEY not in err and OWN_SECRET not in err
    ((app, options),) = uvicorn_runs
    assert options["host"] == "0.0.0.0"
    with serving(app) as url:
        assert httpx.put(f"{url}/_simulator/sessions/ABC-1", json=ONE_STEP).status_code == 401
        assert httpx.put(f"{url}/_simulator/sessions/ABC-1", json=ONE_STEP,
                         headers={"API-Key": OWN_KEY}).status_code == 201
        assert httpx.get(f"{url}/v1/sessions/ABC-1",
                         headers=headers_for("sim-api-key", "sim-api-secret")).status_code == 401
        assert httpx.get(f"{url}/v1/sessions/ABC-1",
                         headers=headers_for(OWN_KEY, OWN_SECRET)).status_code == 200


def test_simulate_help_says_what_opens_a_host_beyond_loopback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--help"])
    out = capsys.readouterr().out
    assert exited.value.code in (0, None)
    assert "beyond loopback only with credentials of your own" in " ".join(out.split())


def test_simulate_scripts_its_most_sessions_and_leaves_the_control_api_room(
    capsys: pytest.CaptureFixture[str], uvicorn_runs: list[Run],
) -> None:
    status, err = simulate(capsys, "--sessions", "100000")
    assert status == 0, err
    ((app, _),) = uvicorn_runs
    with serving(app) as url:
        assert httpx.put(f"{url}/_simulator/sessions/ONE-MORE", json=ONE_STEP).status_code == 201
        assert httpx.get(f"{url}/v1/sessions/SIM-100000",
                         headers=headers_for("sim-api-key", "sim-api-secret")).status_code == 200


# -- the control API --------------------------------------------------------------------

def test_the_control_api_asks_for_the_simulators_own_key(
    own_simulator: tuple[Simulator, str],
) -> None:
    simulator, base = own_simulator
    wrong: list[dict[bytes, bytes]] = [{}, {b"API-Key": b"sim-api-key"},
                                       {b"API-Key": OWN_KEY.encode() + b"x"},
                                       {b"API-Key": "clé".encode()}]  # not ASCII: 401, no 500
    for headers in wrong:
        assert httpx.put(f"{base}/_simulator/sessions/ABC-1", json=ONE_STEP,
                         headers=headers).status_code == 401
        assert httpx.get(f"{base}/_simulator/sessions/ABC-1/served",
                         headers=headers).status_code == 401
    with pytest.raises(KeyError):
        simulator.session("ABC-1")
    assert simulator.rejected_auth == 0  # it counts refused PAVE requests only
    assert httpx.put(f"{base}/_simulator/sessions/ABC-1", json=ONE_STEP,
                     headers={"API-Key": OWN_KEY}).status_code == 201
    assert httpx.get(f"{base}/_simulator/sessions/ABC-1/served",
                     headers={"API-Key": OWN_KEY}).json()["served"] == []


def test_the_control_api_stores_no_session_past_the_cap() -> None:
    simulator = Simulator(max_sessions=3)
    simulator.add_session("IN-PROCESS-1", [("IDLE", None)])  # counted too
    with running_simulator(simulator) as url:
        base = url.removesuffix("/v1")
        for key in ("ABC-1", "ABC-2"):
            assert httpx.put(f"{base}/_simulator/sessions/{key}",
                             json=ONE_STEP).status_code == 201
        full = httpx.put(f"{base}/_simulator/sessions/ABC-3", json=ONE_STEP)
        assert full.status_code == 507 and "3 sessions" in full.json()["message"]
        with pytest.raises(KeyError):
            simulator.session("ABC-3")
        # Replacing a stored session adds nothing, so it still works at the cap.
        replaced = httpx.put(f"{base}/_simulator/sessions/ABC-1",
                             json={"lifecycle": [["COMPLETE", None]]})
        assert replaced.status_code == 201
        assert simulator.session("ABC-1").lifecycle == [("COMPLETE", None)]
    # In-process scripting is the operator's own code, and not capped.
    simulator.add_session("IN-PROCESS-2", [("IDLE", None)])


def padded_json(size: int) -> bytes:
    """ONE_STEP as JSON of exactly `size` bytes."""
    prefix = b'{"lifecycle": [["IDLE", null]]'
    return prefix + b" " * (size - len(prefix) - 1) + b"}"


def test_the_control_api_reads_no_body_over_the_limit(simulator_url: str) -> None:
    base = simulator_url.removesuffix("/v1")
    at_limit = httpx.put(f"{base}/_simulator/sessions/ABC-1", content=padded_json(MAX_BODY_BYTES))
    assert at_limit.status_code == 201
    over = httpx.put(f"{base}/_simulator/sessions/ABC-2",
                     content=padded_json(MAX_BODY_BYTES + 1))
    assert over.status_code == 413
    # Chunked, so no Content-Length says how much is coming.
    big = padded_json(64 * MAX_BODY_BYTES)
    chunked = httpx.put(f"{base}/_simulator/sessions/ABC-3",
                        content=iter([big[i:i + 1024] for i in range(0, len(big), 1024)]))
    assert chunked.status_code == 413


@pytest.mark.parametrize("body", [
    {"lifecycle": [["IDLE", 1]] * MAX_LIFECYCLE_STEPS + [["COMPLETE", None]]},
    {"lifecycle": [["IDLE", -1], ["COMPLETE", None]]},
    {"lifecycle": [["IDLE", 1e300], ["COMPLETE", None]]},
    {"lifecycle": [["IDLE", float("nan")], ["COMPLETE", None]]},
    {"lifecycle": [["IDLE", float("inf")], ["COMPLETE", None]]},
])
def test_the_control_api_refuses_lifecycles_it_cannot_serve(
    simulator: Simulator, simulator_url: str, body: dict[str, Any],
) -> None:
    base = simulator_url.removesuffix("/v1")
    # json.dumps, not httpx's json=, which refuses NaN: Python's json module reads it.
    assert httpx.put(f"{base}/_simulator/sessions/ABC-1",
                     content=json.dumps(body).encode()).status_code == 400
    with pytest.raises(KeyError):
        simulator.session("ABC-1")


def test_the_control_api_refuses_a_key_over_its_length(simulator_url: str) -> None:
    base = simulator_url.removesuffix("/v1")
    assert httpx.put(f"{base}/_simulator/sessions/{'K' * MAX_KEY_LENGTH}",
                     json=ONE_STEP).status_code == 201
    assert httpx.put(f"{base}/_simulator/sessions/{'K' * (MAX_KEY_LENGTH + 1)}",
                     json=ONE_STEP).status_code == 400


# -- PAVE-style callbacks ---------------------------------------------------------------

def register(simulator_url: str, url: str, *, method: str = "POST",
             headers: Any = None) -> httpx.Response:
    body = {"event": "SESSION:STATUS_CHANGE", "url": url, "headers": headers}
    target = f"{simulator_url}/callbacks" + ("/SESSION:STATUS_CHANGE" if method == "PUT" else "")
    return httpx.request(method, target, json=body,
                         headers=headers_for("sim-api-key", "sim-api-secret"))


@pytest.mark.parametrize("url", [
    "http://example.com/pave/callbacks",
    "https://192.0.2.1/pave/callbacks",
    "http://10.0.0.1:8000/",
    "http://0.0.0.0:9/",
    "http://127.0.0.1@example.com/",       # userinfo: the host is example.com
    "http://example.com#@127.0.0.1/",      # the fragment hides nothing from httpx
    "http://127.1/",                       # not an IP literal: a name, never resolved
    "http://2130706433/",
    "http://localhost.example.com/",
    "http://127.0.0.1.nip.io/",
    "http:///no-host",
])
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_callbacks_must_point_at_this_machine(
    simulator: Simulator, simulator_url: str, url: str, method: str,
) -> None:
    refused = register(simulator_url, url, method=method)
    assert refused.status_code == 422
    assert "this machine" in refused.json()["message"]
    assert simulator.callbacks == {}


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/pave/callbacks", "https://127.10.20.30/x",
                                 "http://[::1]:9/x", "http://localhost:9/x",
                                 "http://LocalHost/x"])
def test_callbacks_on_this_machine_are_registered(
    simulator: Simulator, simulator_url: str, url: str,
) -> None:
    assert register(simulator_url, url, method="PUT").status_code == 200
    assert simulator.callbacks["SESSION:STATUS_CHANGE"]["url"] == url


@pytest.mark.parametrize("headers", [{"X-Count": 1}, {"X-Name": "José"}, ["X-Name"], "x"])
def test_callback_headers_the_pusher_could_not_send_are_refused(
    simulator: Simulator, simulator_url: str, headers: Any,
) -> None:
    refused = register(simulator_url, "http://127.0.0.1:9/x", headers=headers)
    assert refused.status_code == 422
    assert simulator.callbacks == {}


def test_a_callback_body_over_the_limit_is_refused(
    simulator: Simulator, simulator_url: str,
) -> None:
    refused = register(simulator_url, "http://127.0.0.1:9/x",
                       headers={"X-Pad": "p" * MAX_BODY_BYTES})
    assert refused.status_code == 413
    assert simulator.callbacks == {}

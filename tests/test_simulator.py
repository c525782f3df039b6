"""The simulator itself: lifecycles in time, quirks, authentication, the control API."""

import datetime as dt
import json
import threading
import time

import httpx

from tests.processes import wait_until
from tests.receivers import Sink
from worker.pave.auth import PaveCredentials
from worker.pave.simulator import (
    SimulatedSession,
    Simulator,
    render,
    running_simulator,
    serving,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_lifecycle_moves_in_time_and_stays_at_the_end() -> None:
    session = SimulatedSession("ABC-1", [("IDLE", 2), ("STARTED", 1), ("COMPLETE", None)],
                               created_at=T0)
    assert [session.payload(at(s))["status"] for s in (0, 1.9, 2, 2.9, 3, 1000)] == [  # type: ignore[index]
        "IDLE", "IDLE", "STARTED", "STARTED", "COMPLETE", "COMPLETE"]


def test_payload_fields_follow_the_lifecycle() -> None:
    session = SimulatedSession(
        "ABC-1", [("IDLE", 1), ("STARTED", 1), ("PROCESS", 1), ("QC_PASSED", 1),
                  ("COMPLETE", None)], created_at=T0)
    idle = session.payload(at(0.5))
    assert idle is not None
    assert idle["inspect_started_at"] is None and "vehicle" not in idle
    process = session.payload(at(2.5))
    assert process is not None
    assert process["inspect_started_at"] == "2026-01-01T00:00:01.000000Z"
    assert process["vehicle"] == {"vin": "5N1AT2MV0HCXXXXXX"}
    done = session.payload(at(9))
    assert done is not None
    assert done["inspect_ended_at"] == "2026-01-01T00:00:03.000000Z"
    assert done["updated_at"] == "2026-01-01T00:00:04.000000Z"
    assert done["vehicle"]["odom_reading"] == "100,945"


def test_not_found_for_a_while_after_creation() -> None:
    session = SimulatedSession("ABC-1", [("IDLE", None)], created_at=T0, not_found_for=5)
    assert session.payload(at(4)) is None
    assert session.payload(at(5)) is not None


def test_trailing_comma_quirk_is_invalid_json() -> None:
    text = render({"a": 1}, trailing_comma=True).decode()
    assert text.rstrip().endswith(",\n}")
    try:
        json.loads(text)
    except ValueError:
        pass
    else:  # pragma: no cover
        raise AssertionError("should not be valid JSON")


def test_control_api_scripts_sessions_and_reports_what_was_served(
    simulator: Simulator, simulator_url: str
) -> None:
    base = simulator_url.removesuffix("/v1")
    created = httpx.put(f"{base}/_simulator/sessions/ABC-1",
                        json={"lifecycle": [["IDLE", None]]})
    assert created.status_code == 201
    headers = PaveCredentials(api_key="sim-api-key", username="sim-user",
                              api_secret="sim-api-secret").headers(dt.datetime.now(dt.UTC))
    assert httpx.get(f"{simulator_url}/sessions/ABC-1", headers=headers).status_code == 200
    served = httpx.get(f"{base}/_simulator/sessions/ABC-1/served").json()
    assert [answer["status"] for answer in served["served"]] == ["IDLE"]


def test_control_api_refuses_a_bad_lifecycle(simulator_url: str) -> None:
    base = simulator_url.removesuffix("/v1")
    for body in ({}, {"lifecycle": []}, {"lifecycle": [["IDLE", "soon"]]}, {"lifecycle": 5}):
        assert httpx.put(f"{base}/_simulator/sessions/ABC-1", json=body).status_code == 400
    assert httpx.put(f"{base}/_simulator/sessions/ABC-1", content=b"not json").status_code == 400


def test_missing_headers_are_refused(simulator: Simulator, simulator_url: str) -> None:
    simulator.add_session("ABC-1", [("IDLE", None)])
    assert httpx.get(f"{simulator_url}/sessions/ABC-1").status_code == 401
    assert simulator.rejected_auth == 1


def register_status_pushes(simulator_url: str, push_url: str) -> None:
    headers = PaveCredentials(api_key="sim-api-key", username="sim-user",
                              api_secret="sim-api-secret").headers(dt.datetime.now(dt.UTC))
    registered = httpx.post(f"{simulator_url}/callbacks", headers=headers,
                            json={"event": "SESSION:STATUS_CHANGE", "url": push_url})
    assert registered.status_code == 201


def pushers_started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """Alive pushers this test started (one another test leaked would not count)."""
    return [t for t in set(threading.enumerate()) - before
            if t.name == "pave-simulator-pusher"]


def test_close_stops_the_pusher_and_nothing_registered_is_pushed_after_it(
    simulator: Simulator, simulator_url: str
) -> None:
    before = set(threading.enumerate())
    sink = Sink()
    with serving(sink.app()) as sink_url:
        register_status_pushes(simulator_url, f"{sink_url}/pushed")
        simulator.add_session("BEFORE-CLOSE", [("IDLE", None)])
        wait_until(lambda: sink.received, 10, "the pusher never pushed")
        (pusher,) = pushers_started_since(before)

        simulator.close()
        assert not pusher.is_alive() and pushers_started_since(before) == []
        # Still registered, and a new session would be pushed within one 50 ms round
        # if anything were left to push it.
        simulator.add_session("AFTER-CLOSE", [("IDLE", None)])
        time.sleep(0.5)
    assert [key for _, key, _ in simulator.pushed] == ["BEFORE-CLOSE"]
    assert len(sink.received) == 1


def test_leaving_running_simulator_stops_its_pusher() -> None:
    before = set(threading.enumerate())
    simulator = Simulator()
    sink = Sink()
    with serving(sink.app()) as sink_url, running_simulator(simulator) as simulator_url:
        register_status_pushes(simulator_url, f"{sink_url}/pushed")
        simulator.add_session("ABC-1", [("IDLE", None)])
        wait_until(lambda: sink.received, 10, "the pusher never pushed")
        (pusher,) = pushers_started_since(before)
    assert not pusher.is_alive() and pushers_started_since(before) == []


def test_closing_a_simulator_that_never_pushed_is_harmless_and_final() -> None:
    before = set(threading.enumerate())
    simulator = Simulator()
    simulator.close()
    simulator.close()
    sink = Sink()
    with serving(sink.app()) as sink_url, running_simulator(simulator) as simulator_url:
        register_status_pushes(simulator_url, f"{sink_url}/pushed")
        simulator.add_session("ABC-1", [("IDLE", None)])
        time.sleep(0.5)
        assert pushers_started_since(before) == []
    assert simulator.pushed == [] and sink.received == []

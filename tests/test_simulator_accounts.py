"""Issue #13: the simulator as a dealer group's PAVE, several accounts in one server.
Each account sees its own sessions and callbacks only, and a test can throttle or refuse
one account while the others are served; over a real server on loopback."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.processes import wait_until
from tests.receivers import Sink
from worker.pave.auth import PaveCredentials
from worker.pave.simulator import DEFAULT_ACCOUNT, Simulator, running_simulator, serving

ONE_STEP = {"lifecycle": [["IDLE", None]]}


@dataclass(frozen=True)
class Branch:
    name: str
    api_key: str
    username: str
    api_secret: str

    def headers(self) -> dict[str, str]:
        return PaveCredentials(api_key=self.api_key, username=self.username,
                               api_secret=self.api_secret).headers(dt.datetime.now(dt.UTC))


DEFAULT = Branch(DEFAULT_ACCOUNT, "sim-api-key", "sim-user", "sim-api-secret")
NORTH = Branch("north", "north-key-7c1e", "north-toyota", "north-secret-2b9d")
SOUTH = Branch("south", "south-key-4a0f", "south-honda", "south-secret-81e3")


@pytest.fixture
def group() -> Iterator[tuple[Simulator, str]]:
    """The published `default` account plus north and south: (simulator, PAVE_API_URL)."""
    simulator = Simulator()
    for branch in (NORTH, SOUTH):
        simulator.add_account(branch.name, api_key=branch.api_key, username=branch.username,
                              api_secret=branch.api_secret)
    with running_simulator(simulator) as url:
        yield simulator, url


def get(url: str, branch: Branch) -> httpx.Response:
    return httpx.get(url, headers=branch.headers())


# -- sessions belong to an account ------------------------------------------------------

def test_each_account_sees_its_own_sessions_and_404s_for_the_others(
    group: tuple[Simulator, str],
) -> None:
    simulator, url = group
    simulator.add_session("N-1", [("COMPLETE", None)], account="north")
    simulator.add_session("S-1", [("COMPLETE", None)], account="south")

    own = get(f"{url}/sessions/N-1", NORTH)
    assert own.status_code == 200 and json.loads(own.text)["session_key"] == "N-1"
    assert get(f"{url}/sessions/S-1", SOUTH).status_code == 200

    unknown = get(f"{url}/sessions/NEVER-MADE", NORTH)
    for other in (get(f"{url}/sessions/S-1", NORTH), get(f"{url}/sessions/S-1", DEFAULT)):
        assert other.status_code == unknown.status_code == 404
        assert other.content == unknown.content.replace(b"NEVER-MADE", b"S-1")
        assert other.headers["content-type"] == unknown.headers["content-type"]

    assert get(f"{url}/sessions/N-1/results", NORTH).status_code == 200
    foreign_results = get(f"{url}/sessions/N-1/results", SOUTH)
    assert foreign_results.status_code == 404
    assert foreign_results.json() == {"message": "Session N-1 cannot be found."}

    # One log per key, saying who asked; another account's 404s included.
    assert [(a.account, a.status) for a in simulator.served("S-1")] == [
        ("south", "COMPLETE"), ("north", None), ("default", None)]
    assert simulator.session("S-1").distinct_statuses_served() == ["COMPLETE"]


def test_another_accounts_404_starts_no_lifecycle(group: tuple[Simulator, str]) -> None:
    simulator, url = group
    session = simulator.add_session("N-LATE", [("IDLE", None)], account="north",
                                    starts_on_first_request=True,
                                    created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert get(f"{url}/sessions/N-LATE", SOUTH).status_code == 404
    assert session.created_at == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert get(f"{url}/sessions/N-LATE", NORTH).status_code == 200
    assert session.created_at > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)


def test_an_account_with_a_static_token(group: tuple[Simulator, str]) -> None:
    simulator, url = group
    simulator.add_account("east", api_key="east-key-90aa", username="east",
                          api_token="east-token-5d2c")
    simulator.add_session("E-1", [("IDLE", None)], account="east")
    headers = PaveCredentials(api_key="east-key-90aa",
                              api_token="east-token-5d2c").headers(dt.datetime.now(dt.UTC))
    assert httpx.get(f"{url}/sessions/E-1", headers=headers).status_code == 200
    # Another account's token with this key is no token of this account's.
    wrong = PaveCredentials(api_key="east-key-90aa", username=NORTH.username,
                            api_secret=NORTH.api_secret).headers(dt.datetime.now(dt.UTC))
    assert httpx.get(f"{url}/sessions/E-1", headers=wrong).status_code == 401


def test_credentials_mixed_across_accounts_are_refused(group: tuple[Simulator, str]) -> None:
    simulator, url = group
    simulator.add_session("N-1", [("IDLE", None)], account="north")
    mixed = Branch("north", NORTH.api_key, SOUTH.username, SOUTH.api_secret)
    assert get(f"{url}/sessions/N-1", mixed).status_code == 401
    assert simulator.rejected_auth == 1
    assert simulator.requests_by_account() == {"default": 0, "north": 0, "south": 0}


# -- faults per account -----------------------------------------------------------------

def test_throttle_answers_429_to_one_account_only(group: tuple[Simulator, str]) -> None:
    simulator, url = group
    simulator.add_session("N-1", [("IDLE", None)], account="north")
    simulator.add_session("S-1", [("IDLE", None)], account="south")

    simulator.throttle("north", retry_after=30)
    for path in ("N-1", "N-1/results", "S-1"):  # another's session: 429 too, it asks nothing
        throttled = get(f"{url}/sessions/{path}", NORTH)
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "30"
    assert get(f"{url}/sessions/S-1", SOUTH).status_code == 200
    assert simulator.served("N-1") == []  # a 429 is a fault, not an answer

    simulator.throttle("north", retry_after=None)
    assert "Retry-After" not in get(f"{url}/sessions/N-1", NORTH).headers
    simulator.unthrottle("north")
    assert get(f"{url}/sessions/N-1", NORTH).status_code == 200
    assert simulator.requests_by_account() == {"default": 0, "north": 5, "south": 1}


def test_throttle_for_a_while_ends_by_itself(group: tuple[Simulator, str]) -> None:
    simulator, url = group
    simulator.add_session("N-1", [("IDLE", None)], account="north")
    simulator.throttle("north", retry_after=0.25, for_seconds=0.5)
    throttled = get(f"{url}/sessions/N-1", NORTH)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "0.25"
    time.sleep(0.6)
    assert get(f"{url}/sessions/N-1", NORTH).status_code == 200


def test_refuse_makes_one_accounts_credentials_401(group: tuple[Simulator, str]) -> None:
    simulator, url = group
    simulator.add_session("N-1", [("IDLE", None)], account="north")
    simulator.add_session("S-1", [("IDLE", None)], account="south")
    simulator.refuse("north")
    refused = get(f"{url}/sessions/N-1", NORTH)
    assert refused.status_code == 401 and refused.json() == {"message": "Unauthenticated."}
    assert get(f"{url}/callbacks", NORTH).status_code == 401
    assert get(f"{url}/sessions/S-1", SOUTH).status_code == 200
    assert simulator.rejected_auth == 2
    # Refused outranks throttled, as a real PAVE checks credentials first.
    simulator.throttle("north", retry_after=1)
    assert get(f"{url}/sessions/N-1", NORTH).status_code == 401

    simulator.refuse("north", refused=False)
    simulator.unthrottle("north")
    assert get(f"{url}/sessions/N-1", NORTH).status_code == 200
    # Refused or not, they were north's own credentials: each request counts.
    assert simulator.requests_by_account() == {"default": 0, "north": 3, "south": 1}


def test_requests_by_account_shows_who_kept_polling(group: tuple[Simulator, str]) -> None:
    simulator, url = group
    simulator.add_session("N-1", [("IDLE", None)], account="north")
    simulator.add_session("S-1", [("IDLE", None)], account="south")
    simulator.throttle("north", retry_after=60)
    for _ in range(3):
        get(f"{url}/sessions/S-1", SOUTH)
    get(f"{url}/sessions/N-1", NORTH)
    get(f"{url}/sessions/UNKNOWN", SOUTH)  # a 404 is an answer too
    httpx.get(f"{url}/sessions/S-1")  # no credentials: nobody's
    assert simulator.requests_by_account() == {"default": 0, "north": 1, "south": 4}


# -- callbacks per account --------------------------------------------------------------

def register(url: str, branch: Branch, push_url: str, *, method: str = "POST",
             event: str = "SESSION:STATUS_CHANGE") -> httpx.Response:
    target = f"{url}/callbacks" + (f"/{event}" if method == "PUT" else "")
    return httpx.request(method, target, headers=branch.headers(),
                         json={"event": event, "url": push_url})


def test_callbacks_are_registered_listed_and_pushed_per_account(
    group: tuple[Simulator, str],
) -> None:
    simulator, url = group
    north_sink, south_sink = Sink(), Sink()
    with serving(north_sink.app()) as north_url, serving(south_sink.app()) as south_url:
        assert register(url, NORTH, f"{north_url}/pushed").status_code == 201
        # The same event for another account is no conflict.
        assert register(url, SOUTH, f"{south_url}/pushed").status_code == 201
        assert register(url, NORTH, f"{north_url}/again").status_code == 409

        assert [c["url"] for c in get(f"{url}/callbacks", NORTH).json()] == [
            f"{north_url}/pushed"]
        assert [c["url"] for c in get(f"{url}/callbacks", SOUTH).json()] == [
            f"{south_url}/pushed"]
        assert get(f"{url}/callbacks", DEFAULT).json() == []
        assert simulator.callbacks == {}  # the default account's
        assert set(simulator.callbacks_of("north")) == {"SESSION:STATUS_CHANGE"}

        simulator.add_session("N-1", [("IDLE", None)], account="north")
        simulator.add_session("S-1", [("IDLE", None)], account="south")
        simulator.add_session("D-1", [("IDLE", None)])  # the default account registered none
        wait_until(lambda: north_sink.received and south_sink.received, 10,
                   "the pusher never pushed")
        time.sleep(0.3)  # a round or more, for any push to the wrong receiver
        (north_push,) = [json.loads(body) for _, body in north_sink.received]
        (south_push,) = [json.loads(body) for _, body in south_sink.received]
    assert north_push["session_key"] == "N-1" and south_push["session_key"] == "S-1"
    assert sorted(key for _, key, _ in simulator.pushed) == ["N-1", "S-1"]


def test_an_account_deletes_and_replaces_only_its_own_callbacks(
    group: tuple[Simulator, str],
) -> None:
    simulator, url = group
    assert register(url, NORTH, "http://127.0.0.1:9/north").status_code == 201
    assert register(url, SOUTH, "http://127.0.0.1:9/south").status_code == 201
    assert register(url, SOUTH, "http://127.0.0.1:9/south-2", method="PUT").status_code == 200
    deleted = httpx.delete(f"{url}/callbacks/SESSION:STATUS_CHANGE", headers=SOUTH.headers())
    assert deleted.status_code == 204
    assert simulator.callbacks_of("south") == {}
    assert simulator.callbacks_of("north")["SESSION:STATUS_CHANGE"]["url"] == \
        "http://127.0.0.1:9/north"


# -- adding accounts --------------------------------------------------------------------

@pytest.mark.parametrize(("name", "options"), [
    ("north", {"api_key": "fresh-key", "username": "u", "api_secret": "s"}),  # name taken
    ("default", {"api_key": "fresh-key", "username": "u", "api_secret": "s"}),
    ("west", {"api_key": NORTH.api_key, "username": "u", "api_secret": "s"}),  # key taken
    ("west", {"api_key": "sim-api-key", "username": "u", "api_secret": "s"}),  # default's
    ("West", {"api_key": "fresh-key", "username": "u", "api_secret": "s"}),
    ("", {"api_key": "fresh-key", "username": "u", "api_secret": "s"}),
    ("w" * 33, {"api_key": "fresh-key", "username": "u", "api_secret": "s"}),
    ("west side", {"api_key": "fresh-key", "username": "u", "api_secret": "s"}),
    ("west", {"api_key": "", "username": "u", "api_secret": "s"}),
    ("west", {"api_key": "fresh-key", "username": "", "api_secret": "s"}),
    ("west", {"api_key": "fresh-key", "username": "u"}),  # nothing could authenticate
    ("west", {"api_key": "fresh-key", "username": "u", "api_secret": "", "api_token": ""}),
])
def test_add_account_refuses_bad_input(
    group: tuple[Simulator, str], name: str, options: dict[str, Any],
) -> None:
    simulator, _ = group
    with pytest.raises(ValueError):
        simulator.add_account(name, **options)
    assert simulator.accounts() == ["default", "north", "south"]


def test_unknown_accounts_are_key_errors(group: tuple[Simulator, str]) -> None:
    simulator, _ = group
    with pytest.raises(KeyError, match="west"):
        simulator.add_session("W-1", [("IDLE", None)], account="west")
    with pytest.raises(KeyError):
        simulator.session("W-1")
    for fault in (lambda: simulator.throttle("west", retry_after=1),
                  lambda: simulator.refuse("west"), lambda: simulator.unthrottle("west"),
                  lambda: simulator.callbacks_of("west")):
        with pytest.raises(KeyError, match="west"):
            fault()
    for seconds in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            simulator.throttle("north", retry_after=seconds)
        with pytest.raises(ValueError):
            simulator.throttle("north", retry_after=1, for_seconds=seconds)


# -- the control API --------------------------------------------------------------------

def test_the_control_api_scripts_a_session_for_an_account(group: tuple[Simulator, str]) -> None:
    simulator, url = group
    base = url.removesuffix("/v1")
    created = httpx.put(f"{base}/_simulator/sessions/N-1", json={**ONE_STEP, "account": "north"})
    assert created.status_code == 201 and created.json()["account"] == "north"
    assert simulator.session("N-1").account == "north"
    assert httpx.put(f"{base}/_simulator/sessions/D-1", json=ONE_STEP).json()["account"] == \
        "default"

    assert get(f"{url}/sessions/N-1", NORTH).status_code == 200
    assert get(f"{url}/sessions/N-1", DEFAULT).status_code == 404
    served = httpx.get(f"{base}/_simulator/sessions/N-1/served").json()["served"]
    assert [(a["account"], a["status"]) for a in served] == [("north", "IDLE"),
                                                             ("default", None)]


@pytest.mark.parametrize("account", ["west", "", None, 5, ["north"], {"name": "north"}])
def test_the_control_api_refuses_an_unknown_account(
    group: tuple[Simulator, str], account: Any,
) -> None:
    simulator, url = group
    base = url.removesuffix("/v1")
    refused = httpx.put(f"{base}/_simulator/sessions/W-1", json={**ONE_STEP, "account": account})
    assert refused.status_code == 400 and "account" in refused.json()["message"]
    with pytest.raises(KeyError):
        simulator.session("W-1")


def test_the_control_api_takes_any_accounts_key_once_none_is_published() -> None:
    simulator = Simulator(api_key="own-key-5f1c0d", api_secret="own-secret-9a7e21")
    simulator.add_account(NORTH.name, api_key=NORTH.api_key, username=NORTH.username,
                          api_secret=NORTH.api_secret)
    assert not simulator.control_api_open
    with running_simulator(simulator) as url:
        base = url.removesuffix("/v1")
        put = f"{base}/_simulator/sessions/ABC-1"
        assert httpx.put(put, json=ONE_STEP).status_code == 401
        assert httpx.put(put, json=ONE_STEP,
                         headers={"API-Key": "sim-api-key"}).status_code == 401
        for key in ("own-key-5f1c0d", NORTH.api_key):
            assert httpx.put(put, json=ONE_STEP, headers={"API-Key": key}).status_code == 201
        assert httpx.get(f"{put}/served", headers={"API-Key": NORTH.api_key}).status_code == 200


def test_the_control_api_stays_open_while_an_account_uses_the_published_key() -> None:
    simulator = Simulator()
    assert simulator.control_api_open
    simulator.add_account(NORTH.name, api_key=NORTH.api_key, username=NORTH.username,
                          api_secret=NORTH.api_secret)
    assert simulator.control_api_open  # the published key is still an account's
    # A published key added later opens it as well: anyone could use that account anyway.
    own = Simulator(api_key="own-key-5f1c0d", api_secret="own-secret-9a7e21")
    own.add_account("demo", api_key="sim-api-key", username="sim-user",
                    api_secret="sim-api-secret")
    assert own.control_api_open


# -- `simulate --account` ---------------------------------------------------------------

def test_simulate_serves_the_accounts_it_is_given(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from worker.cli import main

    runs: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: runs.append(app))
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--port", "0", "--account", "north:north-key:north-user:n-secret",
              "--account", "south:south-key:south-user:s-secret"])
    assert exited.value.code in (0, None), capsys.readouterr().err
    (app,) = runs
    with serving(app) as url, httpx.Client(base_url=url) as client:
        put = client.put("/_simulator/sessions/S-1",
                         json={"lifecycle": [["IDLE", None]], "account": "south"})
        assert put.status_code == 201
        south = PaveCredentials(api_key="south-key", username="south-user",
                                api_secret="s-secret").headers(dt.datetime.now(dt.UTC))
        assert client.get("/v1/sessions/S-1", headers=south).json()["status"] == "IDLE"


@pytest.mark.parametrize("spec", ["North:k:u:s", "north", "north:k", "north:k:u:",
                                  "default:k:u:s", "a:sim-api-key:u:s"])
def test_simulate_refuses_a_bad_account(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    import uvicorn

    from worker.cli import main

    monkeypatch.setattr(uvicorn, "run", lambda app, **options: pytest.fail("served"))
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--port", "0", "--account", spec])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith("pave-tracker: error: bad --account")

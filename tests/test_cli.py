"""The command line, run in-process on the embedded SQLite database in a scratch folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.accounts import get_accounts
from worker.cli import main
from worker.config import get_settings
from worker.delivery.target_config import get_targets


@pytest.fixture(autouse=True)
def scratch(settings_from_scratch: Path) -> Path:
    return settings_from_scratch


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    get_settings.cache_clear()
    get_targets.cache_clear()
    get_accounts.cache_clear()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def assert_refused(result: tuple[int, str, str], reason: str) -> None:
    status, out, err = result
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("pave-tracker: error: "), err
    assert reason in err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(capsys, "--help")
    assert status == 0
    for command in ("track", "untrack", "list", "show", "db", "run", "simulate"):
        assert command in out


def test_track_list_show_untrack(capsys: pytest.CaptureFixture[str], scratch: Path) -> None:
    status, out, _ = cli(capsys, "track", "ABC-1", "ABC-2", "--meta", "dealer=Main St",
                         "--email", "jane@example.com")
    assert status == 0 and "2 new" in out
    status, out, _ = cli(capsys, "list", "--json")
    rows = json.loads(out)
    assert [row["session_key"] for row in rows] == ["ABC-1", "ABC-2"]
    assert rows[0]["metadata"] == {"dealer": "Main St", "email": "jane@example.com"}
    assert rows[0]["account"] == "default" and rows[0]["dealer_name"] is None
    assert set(rows[0]) == {"session_key", "account", "dealer_name", "status", "tracking",
                            "capture_url", "status_since", "inspect_started_at",
                            "inspect_ended_at", "vehicle", "metadata", "polls",
                            "last_polled_at", "next_poll_at", "last_error"}
    status, out, _ = cli(capsys, "show", "ABC-1", "--json")
    shown = json.loads(out)
    assert set(shown) == set(rows[0]) | {"history", "deliveries"}
    assert shown["tracking"] == "active" and shown["history"] == []
    status, out, _ = cli(capsys, "show", "ABC-1")
    assert status == 0 and "ABC-1" in out and "history:" in out
    status, out, _ = cli(capsys, "untrack", "ABC-1")
    assert status == 0
    status, out, _ = cli(capsys, "list", "--tracking", "stopped")
    assert "ABC-1" in out and "ABC-2" not in out
    assert (scratch / "pave-tracker.db").exists()


def test_track_from_csv(capsys: pytest.CaptureFixture[str], scratch: Path) -> None:
    (scratch / "keys.csv").write_text(
        "\ufeffsession_key,email,stock\nABC-1,a@example.com,S1\n\nABC-2,,S2\n")
    status, out, err = cli(capsys, "track", "--file", "keys.csv", "--meta", "source=csv")
    assert status == 0, err
    status, out, _ = cli(capsys, "list", "--json")
    rows = {row["session_key"]: row["metadata"] for row in json.loads(out)}
    assert rows == {"ABC-1": {"email": "a@example.com", "stock": "S1", "source": "csv"},
                    "ABC-2": {"stock": "S2", "source": "csv"}}


@pytest.mark.parametrize(
    "args, reason",
    [
        (["track", "bad key"], "bad session key"),
        (["track", "AB"], "bad session key"),
        (["track", "A" * 65], "bad session key"),
        (["track", "ABC-1", "../../etc/passwd"], "bad session key"),
        (["track", "ABC-1", "ABC%2F1"], "bad session key"),
        (["track"], "nothing to track"),
        (["track", "ABC-1", "--meta", "novalue"], "expected NAME=VALUE"),
        (["track", "ABC-1", "--meta", "=x"], "expected NAME=VALUE"),
        (["track", "ABC-1", "--email", "not-an-address"], "bad email"),
        (["track", "--file", "missing.csv"], "cannot read"),
        (["untrack"], "Missing argument"),
        (["untrack", "bad/key"], "bad session key"),
        (["show", "bad key"], "bad session key"),
        (["list", "--tracking", "sleeping"], "Invalid value"),
        (["list", "--limit", "0"], "Invalid value"),
        (["frobnicate"], "No such command"),
        (["track", "ABC-1", "--colour"], "No such option"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(
    capsys: pytest.CaptureFixture[str], scratch: Path, args: list[str], reason: str
) -> None:
    assert_refused(cli(capsys, *args), reason)
    assert not (scratch / "pave-tracker.db").exists()


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "the file is empty"),
        (b"key,email\nABC-1,a@b.co\n", "line 1: no session_key column"),
        (b"session_key,a,a\nABC-1,1,2\n", "line 1: a column name appears twice"),
        (b"session_key\nABC-1\nnot valid!\n", "line 3: bad session key"),
        (b"session_key,email\nABC-1,a@b.co\nABC-2,nope\n", "line 3: bad email"),
        (b"session_key\nABC-1,extra\n", "line 2: more fields than the header"),
        (b"session_key\n\xff\xfe\n", "not UTF-8"),
        (b'session_key\n"ABC-1\n', "line 2: unexpected end of data"),
        (b"session_key\nAB\x00C\n", "line 2"),
    ],
)
def test_bad_csv_exits_2_with_the_line_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], scratch: Path, content: bytes, reason: str
) -> None:
    (scratch / "keys.csv").write_bytes(content)
    assert_refused(cli(capsys, "track", "ABC-9", "--file", "keys.csv"), reason)
    assert not (scratch / "pave-tracker.db").exists()


@pytest.mark.parametrize(
    "variable, value",
    [
        ("POLL_INTERVAL", "soon"),
        ("POLL_INTERVAL", "-1"),
        ("POLL_INTERVAL_IDLE", "0"),
        ("DISPATCH_INTERVAL", "nan"),
        ("POLL_INTERVAL", "inf"),
        ("NOT_FOUND_GRACE", "inf"),
        ("LEASE_SECONDS", "1e400"),
        ("NOT_FOUND_GRACE", "-5"),
        ("POLL_MAX_AGE", "0"),
        ("TERMINAL_STATUSES", " , "),
        ("PAVE_API_URL", "ftp://pave"),
        ("DATABASE_URL", "pave.db"),
        ("LEASE_SECONDS", "1"),
    ],
)
def test_bad_settings_exit_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, scratch: Path,
    variable: str, value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    status, _, err = cli(capsys, "track", "ABC-1")
    assert_refused((status, _, err), "bad setting")
    assert variable in err or variable == "LEASE_SECONDS" and "LEASE_SECONDS" in err
    assert not (scratch / "pave-tracker.db").exists()


def test_a_bad_setting_never_echoes_a_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAVE_API_SECRET", "super-secret-value")
    monkeypatch.delenv("PAVE_USERNAME", raising=False)
    status, out, err = cli(capsys, "track", "ABC-1")
    assert status == 2 and "PAVE_USERNAME" in err
    assert "super-secret-value" not in out + err


def test_an_empty_variable_means_the_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLL_INTERVAL", "")
    assert cli(capsys, "track", "ABC-1")[0] == 0
    assert get_settings().poll_interval == 60


def test_settings_from_a_dotenv_file(capsys: pytest.CaptureFixture[str], scratch: Path) -> None:
    (scratch / ".env").write_text("DATABASE_URL=sqlite:///from-dotenv.db\n")
    assert cli(capsys, "track", "ABC-1")[0] == 0
    assert (scratch / "from-dotenv.db").exists()


def test_unknown_session_in_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(cli(capsys, "show", "NOPE-1"), "not tracked: NOPE-1")


def test_db_upgrade(capsys: pytest.CaptureFixture[str], scratch: Path) -> None:
    status, out, _ = cli(capsys, "db", "upgrade")
    assert status == 0 and (scratch / "pave-tracker.db").exists()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=80), min_size=1, max_size=4))
def test_any_key_arguments_give_success_or_exit_2(
    capsys: pytest.CaptureFixture[str], keys: list[str]
) -> None:
    keys = [key for key in keys if not key.startswith("-")]
    if not keys:
        return
    status, _, err = cli(capsys, "track", *keys)
    assert status in (0, 2), err
    if status == 2:
        assert err.count("\n") == 1


def seed_dead_delivery(folder: Path) -> str:
    """A session with one dead webhook delivery, in the scratch folder's database."""
    from sqlalchemy import select

    from tests.test_outbox import WEBHOOK, complete
    from worker.db import session_factory
    from worker.models import Delivery, DeliveryState

    sessions = session_factory(f"sqlite:///{folder / 'pave-tracker.db'}")
    complete(sessions, [WEBHOOK])
    with sessions.begin() as db:
        delivery = db.scalars(select(Delivery)).one()
        delivery.state = DeliveryState.DEAD
        delivery.next_attempt_at = None
        delivery.last_error = "HTTP 500"
        return delivery.id


def test_deliveries_and_replay(capsys: pytest.CaptureFixture[str], scratch: Path) -> None:
    assert cli(capsys, "db", "upgrade")[0] == 0
    delivery_id = seed_dead_delivery(scratch)
    status, out, _ = cli(capsys, "deliveries", "--state", "dead", "--json")
    (row,) = json.loads(out)
    assert row["id"] == delivery_id and row["session_key"] == "ABC-1"
    assert row["event"] == "session.completed" and row["last_error"] == "HTTP 500"
    status, out, _ = cli(capsys, "deliveries")
    assert delivery_id in out and "1 delivery" in out
    status, out, _ = cli(capsys, "show", "ABC-1", "--json")
    assert json.loads(out)["deliveries"] == [{"id": delivery_id, "event": "session.completed",
                                              "target": "webhook", "state": "dead",
                                              "attempts": 0}]
    status, out, _ = cli(capsys, "replay", delivery_id)
    assert status == 0 and "replaying 1 delivery" in out
    status, out, _ = cli(capsys, "deliveries", "--state", "pending", "--json")
    assert [row["id"] for row in json.loads(out)] == [delivery_id]
    assert "replaying 0 deliveries" in cli(capsys, "replay", "--dead")[1]


@pytest.mark.parametrize(
    "args, reason",
    [
        (["replay"], "give delivery ids, or --dead alone"),
        (["replay", "--dead", "msg_" + "0" * 32], "give delivery ids, or --dead alone"),
        (["replay", "12; DROP TABLE deliveries"], "bad delivery id"),
        (["replay", "msg_" + "0" * 32], "no such delivery"),
        (["deliveries", "--state", "lost"], "Invalid value"),
    ],
)
def test_bad_delivery_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], reason: str
) -> None:
    assert cli(capsys, "db", "upgrade")[0] == 0
    assert_refused(cli(capsys, *args), reason)


def test_a_bad_target_file_stops_run_with_exit_2(
    capsys: pytest.CaptureFixture[str], scratch: Path
) -> None:
    (scratch / "pave-tracker.toml").write_text("[[webhook]]\nname = 'x'\n")
    assert_refused(cli(capsys, "run"), "bad setting PAVE_TRACKER_CONFIG")


def test_a_big_csv_shows_progress(capsys: pytest.CaptureFixture[str], scratch: Path) -> None:
    rows = "\n".join(f"KEY-{number:05d},S{number}" for number in range(2500))
    (scratch / "big.csv").write_text(f"session_key,stock\n{rows}\n")
    status, out, err = cli(capsys, "track", "--file", "big.csv")
    assert status == 0 and "2500 new" in out
    assert "tracking" in err  # the progress bar, on stderr


@pytest.mark.parametrize(
    "args, env, reason",
    [
        (["serve"], {}, "set API_TOKENS"),
        (["serve"], {"API_TOKENS": "short"}, "at least 16 characters"),
        (["serve"], {"API_TOKENS": "t" * 16, "PAVE_PUSH_TOKEN": "abc"},
         "bad setting PAVE_PUSH_TOKEN: needs at least 16 characters"),
        (["run"], {"METRICS_PORT": "9808", "METRICS_HOST": "every interface"},
         "bad setting METRICS_HOST"),
        (["pave", "register-callbacks", "https://x.example/pave/callbacks"], {},
         "set PAVE_PUSH_TOKEN"),
        (["pave", "register-callbacks", "ftp://x"], {"PAVE_PUSH_TOKEN": "p" * 20}, "bad URL"),
    ],
)
def test_serve_and_register_refuse_what_cannot_work(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    args: list[str], env: dict[str, str], reason: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert_refused(cli(capsys, *args), reason)


def test_register_callbacks_with_the_simulator(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    simulator: object, simulator_url: str,
) -> None:
    for name, value in {"PAVE_API_URL": simulator_url, "PAVE_API_KEY": "sim-api-key",
                        "PAVE_USERNAME": "sim-user", "PAVE_API_SECRET": "sim-api-secret",
                        "PAVE_PUSH_TOKEN": "push-token-0123456789"}.items():
        monkeypatch.setenv(name, value)
    url = "http://127.0.0.1:9/pave/callbacks"
    status, out, _ = cli(capsys, "pave", "register-callbacks", url)
    assert status == 0 and "SESSION:COMPLETE: registered" in out
    status, out, _ = cli(capsys, "pave", "register-callbacks", url)
    assert status == 0 and "SESSION:COMPLETE: updated" in out
    assert "push-token-0123456789" not in out
    monkeypatch.setenv("PAVE_API_SECRET", "wrong")
    status, _, err = cli(capsys, "pave", "register-callbacks", url)
    assert status == 1 and "refused the credentials" in err

"""What is stuck now: active sessions longer in their status than STALL_AFTER allows, on
SQLite and PostgreSQL with a fixed clock, and `pave-tracker stalled`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import add_session
from tests.test_cli import assert_refused, cli
from worker.config import load_settings
from worker.db import session_factory, utcnow
from worker.models import Tracking
from worker.schema import upgrade_database
from worker.tracking.nudges import stalled_sessions

NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
STALL_AFTER = {"IDLE": 86400.0, "STARTED": 7200.0}


def seed(db: Session, now: dt.datetime) -> None:
    def ago(hours: float) -> dt.datetime:
        return now - dt.timedelta(hours=hours)

    add_session(db, "IDLE-25H", status="IDLE", status_since=ago(25), account="north")
    add_session(db, "IDLE-23H", status="IDLE", status_since=ago(23))
    add_session(db, "STARTED-3H", status="STARTED", status_since=ago(3))
    add_session(db, "STARTED-1H", status="STARTED", status_since=ago(1))
    add_session(db, "PROCESS-99H", status="PROCESS", status_since=ago(99))  # no rule
    add_session(db, "IDLE-OLD-UNKNOWN", status="IDLE", status_since=None)  # before 0009
    add_session(db, "IDLE-STOPPED", status="IDLE", status_since=ago(48),
                tracking=Tracking.STOPPED)


def test_stalled_is_past_its_statuss_limit(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as db:
        seed(db, NOW)
    with sessions() as db:
        found = stalled_sessions(db=db, stall_after=STALL_AFTER, now=NOW)
        north = stalled_sessions(db=db, stall_after=STALL_AFTER, now=NOW, accounts=["north"])
        nothing = stalled_sessions(db=db, stall_after={}, now=NOW)
    assert [(s.session_key, s.stalled_for, s.allowed) for s in found] == [
        ("IDLE-25H", 25 * 3600, 86400), ("STARTED-3H", 3 * 3600, 7200)]
    assert [s.session_key for s in north] == ["IDLE-25H"] and nothing == []


@pytest.fixture
def scratch_database(settings_from_scratch: Path) -> Path:
    settings = load_settings()
    upgrade_database(settings)
    with session_factory(settings.database_url).begin() as db:
        seed(db, utcnow())
    return settings_from_scratch


def test_the_stalled_command(capsys: pytest.CaptureFixture[str], scratch_database: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALL_AFTER", "IDLE=1d,STARTED=2h")
    status, out, err = cli(capsys, "stalled", "--json")
    assert status == 0, err
    rows = json.loads(out)
    assert [(row["session_key"], row["status"]) for row in rows] == [
        ("IDLE-25H", "IDLE"), ("STARTED-3H", "STARTED")]
    assert 25 * 3600 <= rows[0]["stalled_for"] < 25 * 3600 + 60
    status, out, _ = cli(capsys, "stalled")
    assert "IDLE-25H" in out and "1d 1h" in out and "3h" in out
    assert out.rstrip().endswith("2 stalled session(s)")


@pytest.mark.parametrize("env, args, reason", [
    ({}, [], "set STALL_AFTER"),
    ({"STALL_AFTER": "IDLE"}, [], "bad setting STALL_AFTER: expected STATUS=duration pairs"),
    ({"STALL_AFTER": "IDLE=soon"}, [], "bad setting STALL_AFTER: IDLE: not a duration"),
    ({"STALL_AFTER": "IDLE=0"}, [], "more than zero seconds"),
    ({"STALL_AFTER": "IDLE=1d"}, ["--account", "west"], "unknown account 'west'"),
    ({"STALL_AFTER": "IDLE=1d"}, ["--limit", "0"], "--limit"),
])
def test_stalled_garbage_exits_2(capsys: pytest.CaptureFixture[str], scratch_database: Path,
                                 monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                 args: list[str], reason: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert_refused(cli(capsys, "stalled", *args), reason)

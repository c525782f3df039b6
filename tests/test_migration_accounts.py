"""Migration 0007 from the last release's schema (0006) with data in it: every session
moves to the `default` account, a running pause with it, and back on downgrade."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from tests.test_migrations import run
from worker.db import engine_for

PAUSED_UNTIL = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def upgrade_with_data(url: str) -> None:
    run(url, ("downgrade", "base"), ("upgrade", "0006"))
    with engine_for(url).begin() as connection:
        connection.execute(text(
            "INSERT INTO tracked_sessions (session_key, tracking, user_metadata, poll_count, "
            "consecutive_errors, unfinished_polls, tracked_at, next_poll_at) VALUES "
            "('OLD-1', 'active', '{}', 3, 0, 0, :now, :now), "
            "('OLD-2', 'done', '{\"email\": \"a@b.co\"}', 9, 0, 0, :now, NULL)"),
            {"now": dt.datetime(2026, 11, 1, tzinfo=dt.UTC)})
        connection.execute(text("UPDATE pave_account SET paused_until = :until, "
                                "pause_reason = 'PAVE refused the credentials' WHERE id = 1"),
                           {"until": PAUSED_UNTIL})
    run(url, ("upgrade", "head"))


def check_accounts_migration(url: str) -> None:
    upgrade_with_data(url)
    with engine_for(url).connect() as connection:
        rows = connection.execute(text(
            "SELECT session_key, account, poll_count FROM tracked_sessions ORDER BY id")).all()
        pauses = connection.execute(text(
            "SELECT account, pause_reason FROM account_pauses")).all()
    assert [tuple(row) for row in rows] == [("OLD-1", "default", 3), ("OLD-2", "default", 9)]
    assert [tuple(row) for row in pauses] == [("default", "PAVE refused the credentials")]

    run(url, ("downgrade", "0006"))
    with engine_for(url).connect() as connection:
        reason = connection.scalar(text("SELECT pause_reason FROM pave_account WHERE id = 1"))
        keys = connection.scalars(text("SELECT session_key FROM tracked_sessions")).all()
    assert reason == "PAVE refused the credentials" and sorted(keys) == ["OLD-1", "OLD-2"]
    run(url, ("downgrade", "base"), ("upgrade", "head"))  # as the other tests expect it


def test_going_back_refuses_while_other_accounts_have_sessions(sqlite_url: str) -> None:
    """Revision 0006 would poll them with the PAVE_* credentials: refused, kept."""
    with engine_for(sqlite_url).begin() as connection:
        connection.execute(text(
            "INSERT INTO tracked_sessions (session_key, account, tracking, user_metadata, "
            "poll_count, consecutive_errors, unfinished_polls, tracked_at) VALUES "
            "('N-1', 'north', 'active', '{}', 0, 0, 0, '2026-11-30 00:00:00')"))
    with pytest.raises(RuntimeError, match="1 sessions belong to accounts other than"):
        run(sqlite_url, ("downgrade", "0006"))
    with engine_for(sqlite_url).connect() as connection:
        assert connection.scalar(text("SELECT account FROM tracked_sessions")) == "north"


def test_sqlite(sqlite_url: str) -> None:
    check_accounts_migration(sqlite_url)


def test_postgresql(pg_url: str) -> None:
    check_accounts_migration(pg_url)

"""A 429 or refused credentials pause the whole PAVE account, not one session's budget;
the pause holds for ticks, for batches already handed out, and for pushes."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Mapping, Sequence

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.helpers import Clock, add_session, all_keys, tick
from worker.config import Settings
from worker.errors import PaveAuthError, PaveRateLimited
from worker.models import AccountPause, TrackedSession
from worker.pave.fetching import NotAsked, Outcome
from worker.pave.payload import SessionSnapshot
from worker.tracking.account import account_paused_until, pause_account
from worker.tracking.polling import poll_leased_sessions
from worker.tracking.push import PushOutcome, lease_for_push


def answering(outcome_for: dict[str, Outcome], asked: list[str] | None = None):  # type: ignore[no-untyped-def]
    def fetch(keys_by_account: Mapping[str, Sequence[str]]) -> dict[str, Outcome]:
        keys = all_keys(keys_by_account)
        if asked is not None:
            asked.extend(keys)
        return {key: outcome_for.get(key, SessionSnapshot(session_key=key, status="IDLE"))
                for key in keys}
    return fetch


def poll_all(sessions: sessionmaker[Session], settings: Settings, clock: Clock,
             outcome_for: dict[str, Outcome]) -> int:
    sent = tick(sessions, settings, clock)
    for ids, token in sent:
        poll_leased_sessions(ids=ids, lease_token=token, sessions=sessions, clock=clock,
                             settings=settings, fetch=answering(outcome_for))
    return sum(len(ids) for ids, _ in sent)


def by_key(sessions: sessionmaker[Session]) -> dict[str, TrackedSession]:
    with sessions() as db:
        return {t.session_key: t for t in db.scalars(select(TrackedSession))}


def test_a_429_pauses_every_session_and_spends_no_budget(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = make_settings(database_url, poll_interval=0.1, poll_interval_idle=0.1)
    clock = Clock()
    with sessions.begin() as db:
        for key in ("ABC-1", "ABC-2", "ABC-3"):
            add_session(db, key, next_poll_at=clock.now)
    start = clock.now
    assert poll_all(sessions, settings, clock,
                    {"ABC-2": PaveRateLimited("429", retry_after=1.0)}) == 3
    rows = by_key(sessions)
    assert rows["ABC-2"].consecutive_errors == 0
    assert rows["ABC-2"].last_error == "rate_limited: 429"
    assert rows["ABC-2"].next_poll_at is not None
    assert rows["ABC-2"].next_poll_at >= start + dt.timedelta(seconds=1.0)
    with sessions() as db:
        account = db.scalars(select(AccountPause)).one()
    assert account.pause_reason == "PAVE asked to slow down (429)"

    clock.advance(0.3)  # the others are due again, but the account is paused
    assert poll_all(sessions, settings, clock, {}) == 0
    clock.advance(1.0)
    assert poll_all(sessions, settings, clock, {}) == 3  # the pause is over: everyone again


def test_refused_credentials_pause_the_account_loudly(
    database_url: str, sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database_url, auth_pause=0.5, poll_interval=0.1,
                             poll_interval_idle=0.1)
    clock = Clock()
    with sessions.begin() as db:
        add_session(db, "ABC-1", next_poll_at=clock.now)
        add_session(db, "ABC-2", next_poll_at=clock.now)
    refused = PaveAuthError("PAVE refused the credentials (HTTP 401)", status_code=401)
    poll_all(sessions, settings, clock, {"ABC-1": refused, "ABC-2": refused})
    rows = by_key(sessions)
    assert all(row.consecutive_errors == 0 for row in rows.values())
    assert "refused the credentials" in (rows["ABC-1"].last_error or "")
    assert "polling paused" in caplog.text
    assert poll_all(sessions, settings, clock, {}) == 0
    clock.advance(0.7)
    assert poll_all(sessions, settings, clock, {}) == 2
    assert all(row.last_error is None for row in by_key(sessions).values())


def test_a_batch_handed_out_before_the_pause_asks_nothing(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """Batches already in the broker when another worker's 429 paused the account: each
    checks the pause before fetching and hands its sessions back, due when it ends."""
    settings = make_settings(database_url, poll_batch_size=2)
    clock = Clock()
    with sessions.begin() as db:
        for number in range(6):
            add_session(db, f"ABC-{number}", next_poll_at=clock.now)
    sent = tick(sessions, settings, clock)
    assert len(sent) == 3
    with sessions.begin() as db:
        until = pause_account(db=db, account="default", until=clock.now + dt.timedelta(seconds=30),
                              reason="PAVE asked to slow down (429)")
    asked: list[str] = []
    for ids, token in sent:
        report = poll_leased_sessions(ids=ids, lease_token=token, sessions=sessions,
                                      settings=settings, clock=clock, fetch=answering({}, asked))
        assert report.claimed == 0 and report.released == 2
    assert asked == []
    rows = by_key(sessions).values()
    assert {row.next_poll_at for row in rows} == {until}
    assert all(row.lease_token is None and row.poll_count == 0 and row.unfinished_polls == 0
               for row in rows)
    clock.advance(31)
    assert sum(len(ids) for ids, _ in tick(sessions, settings, clock)) == 6


def test_keys_a_batch_did_not_ask_are_released_not_errored(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """A batch stopped at the first refusal: the keys it never asked lose nothing."""
    settings = make_settings(database_url, auth_pause=300)
    clock = Clock()
    with sessions.begin() as db:
        for key in ("ABC-1", "ABC-2", "ABC-3"):
            add_session(db, key, next_poll_at=clock.now, status="STARTED",
                        consecutive_errors=1)
    refused = PaveAuthError("PAVE refused the credentials (HTTP 401)", status_code=401)
    paused = NotAsked("the PAVE account is paused", paused_for=300)
    poll_all(sessions, settings, clock, {"ABC-1": refused, "ABC-2": paused, "ABC-3": paused})
    rows = by_key(sessions)
    for key in ("ABC-2", "ABC-3"):
        row = rows[key]
        assert row.poll_count == 0 and row.last_polled_at is None
        assert row.consecutive_errors == 1 and row.last_error is None
        assert row.unfinished_polls == 0 and row.lease_token is None
        assert row.next_poll_at is not None
        assert row.next_poll_at >= clock.now + dt.timedelta(seconds=300)
    assert rows["ABC-1"].poll_count == 1


def test_a_push_asks_nothing_while_the_account_is_paused(
    sessions: sessionmaker[Session]
) -> None:
    clock = Clock()
    with sessions.begin() as db:
        add_session(db, "ABC-1", next_poll_at=clock.now + dt.timedelta(seconds=600))
        until = pause_account(db=db, account="default", until=clock.now + dt.timedelta(seconds=60),
                              reason="PAVE asked to slow down (429)")
    with sessions.begin() as db:
        outcome, lease = lease_for_push(db=db, account="default", session_key="ABC-1",
                                        now=clock.now, lease_seconds=30, autotrack=False)
    assert outcome is PushOutcome.PAUSED and lease is None
    row = by_key(sessions)["ABC-1"]
    assert row.next_poll_at == until and row.lease_token is None


def test_a_longer_pause_is_never_shortened(sessions: sessionmaker[Session]) -> None:
    now = Clock().now
    with sessions.begin() as db:
        pause_account(db=db, account="default", until=now + dt.timedelta(seconds=60),
                      reason="long")
        kept = pause_account(db=db, account="default", until=now + dt.timedelta(seconds=5),
                             reason="short")
    assert kept == now + dt.timedelta(seconds=60)
    with sessions() as db:
        assert account_paused_until(db=db, account="default",
                                    now=now) == now + dt.timedelta(seconds=60)
        assert account_paused_until(db=db, account="default",
                                    now=now + dt.timedelta(seconds=61)) is None


def wait_for_a_lock_wait(url: str) -> None:
    """Until some session of this database waits on a lock (or 10 s have gone by)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    deadline = time.monotonic() + 10
    try:
        with engine.connect() as connection:
            while time.monotonic() < deadline:
                waiting = connection.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"))
                connection.rollback()
                if waiting:
                    return
                time.sleep(0.02)
    finally:
        engine.dispose()
    raise AssertionError("the second transaction never waited on the first")


def test_two_first_pauses_at_once_both_commit(pg_url: str) -> None:
    """With no account row yet, two workers pausing at once: neither fails on the insert.
    (The first holds its new row uncommitted while the second tries.)"""
    from worker.db import session_factory

    sessions = session_factory(pg_url)
    now = Clock().now
    errors: list[Exception] = []
    first = sessions()
    first.begin()
    pause_account(db=first, account="default", until=now + dt.timedelta(seconds=10), reason="first")

    def second() -> None:
        try:
            with sessions.begin() as db:
                pause_account(db=db, account="default",
                              until=now + dt.timedelta(seconds=20), reason="second")
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    wait_for_a_lock_wait(pg_url)  # the second is waiting on the first's row
    first.commit()
    first.close()
    thread.join(timeout=10)
    assert errors == []
    with sessions() as db:
        assert account_paused_until(db=db, account="default",
                                    now=now) == now + dt.timedelta(seconds=20)


def test_keys_stopped_by_the_gate_alone_wait_for_it_too(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """The batch that met the 429 writes the pause when it ends. Until then another
    thread's batch knows of the pause only from the process's gate: its keys go back
    until the gate opens, not to be leased again at once."""
    settings = make_settings(database_url)
    clock = Clock()
    with sessions.begin() as db:
        add_session(db, "ABC-1", next_poll_at=clock.now)
    gated = NotAsked("the PAVE account is paused", paused_for=30)
    poll_all(sessions, settings, clock, {"ABC-1": gated})
    row = by_key(sessions)["ABC-1"]
    assert row.next_poll_at is not None
    assert row.next_poll_at >= clock.now + dt.timedelta(seconds=30)
    with sessions() as db:
        # Not in the database:
        assert account_paused_until(db=db, account="default", now=clock.now) is None

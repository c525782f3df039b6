"""A 429 or refused credentials pause the whole PAVE account, not one session's budget."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.helpers import add_session
from worker.db import utcnow
from worker.errors import PaveAuthError, PaveRateLimited
from worker.models import PaveAccount, TrackedSession
from worker.pave.fetching import Outcome
from worker.pave.payload import SessionSnapshot
from worker.tracking.polling import dispatch_due_polls, poll_leased_sessions


def poll_all(sessions: sessionmaker[Session], settings: object,
             outcome_for: dict[str, Outcome]) -> int:
    sent: list[tuple[list[int], str]] = []
    leased = dispatch_due_polls(sessions=sessions, settings=settings,  # type: ignore[arg-type]
                                enqueue=lambda ids, token: sent.append((ids, token)))

    def fetch(keys: Sequence[str]) -> dict[str, Outcome]:
        return {key: outcome_for.get(key, SessionSnapshot(session_key=key, status="IDLE"))
                for key in keys}

    for ids, token in sent:
        poll_leased_sessions(ids=ids, lease_token=token, sessions=sessions,
                             settings=settings, fetch=fetch)  # type: ignore[arg-type]
    return leased


def by_key(sessions: sessionmaker[Session]) -> dict[str, TrackedSession]:
    with sessions() as db:
        return {t.session_key: t for t in db.scalars(select(TrackedSession))}


def test_a_429_pauses_every_session_and_spends_no_budget(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = make_settings(database_url, poll_interval=0.1, poll_interval_idle=0.1)
    with sessions.begin() as db:
        for key in ("ABC-1", "ABC-2", "ABC-3"):
            add_session(db, key)
    start = utcnow()
    assert poll_all(sessions, settings,
                    {"ABC-2": PaveRateLimited("429", retry_after=1.0)}) == 3
    rows = by_key(sessions)
    assert rows["ABC-2"].consecutive_errors == 0
    assert rows["ABC-2"].last_error == "rate_limited: 429"
    assert rows["ABC-2"].next_poll_at is not None
    assert rows["ABC-2"].next_poll_at >= start + dt.timedelta(seconds=1.0)
    with sessions() as db:
        account = db.scalars(select(PaveAccount)).one()
    assert account.pause_reason == "PAVE asked to slow down (429)"

    time.sleep(0.3)  # the others are due again, but the account is paused
    assert poll_all(sessions, settings, {}) == 0
    time.sleep(1.0)
    assert poll_all(sessions, settings, {}) == 3  # the pause is over: everyone again


def test_refused_credentials_pause_the_account_loudly(
    database_url: str, sessions: sessionmaker[Session], caplog: object
) -> None:
    settings = make_settings(database_url, auth_pause=0.5, poll_interval=0.1,
                             poll_interval_idle=0.1)
    with sessions.begin() as db:
        add_session(db, "ABC-1")
        add_session(db, "ABC-2")
    refused = PaveAuthError("PAVE refused the credentials (HTTP 401)", status_code=401)
    poll_all(sessions, settings, {"ABC-1": refused, "ABC-2": refused})
    rows = by_key(sessions)
    assert all(row.consecutive_errors == 0 for row in rows.values())
    assert "refused the credentials" in (rows["ABC-1"].last_error or "")
    assert "polling paused" in caplog.text  # type: ignore[attr-defined]
    assert poll_all(sessions, settings, {}) == 0
    time.sleep(0.7)
    assert poll_all(sessions, settings, {}) == 2
    assert all(row.last_error is None for row in by_key(sessions).values())


def test_a_longer_pause_is_never_shortened(sessions: sessionmaker[Session]) -> None:
    from worker.tracking.account import account_paused_until, pause_account

    now = utcnow()
    with sessions.begin() as db:
        pause_account(db=db, until=now + dt.timedelta(seconds=60), reason="long")
        kept = pause_account(db=db, until=now + dt.timedelta(seconds=5), reason="short")
    assert kept == now + dt.timedelta(seconds=60)
    with sessions() as db:
        assert account_paused_until(db=db, now=now) == now + dt.timedelta(seconds=60)
        assert account_paused_until(db=db, now=now + dt.timedelta(seconds=61)) is None

"""A session whose polls never finish (the worker dies each time) cannot loop forever."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.helpers import add_session
from worker.delivery.targets import HookTarget
from worker.models import Event, TrackedSession, Tracking
from worker.pave.payload import SessionSnapshot
from worker.tracking.polling import dispatch_due_polls, poll_leased_sessions

HOOK = HookTarget(name="hook", callable="x:y", events=["tracking.gave_up"])


def test_gives_up_after_too_many_unfinished_polls(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = make_settings(database_url, lease_seconds=0.05, pave_timeout=0.01,
                             max_unfinished_polls=2)
    with sessions.begin() as db:
        add_session(db, "POISON-1")
    leased = []
    for _ in range(6):  # every lease runs out: the "worker" dies before recording
        leased.append(dispatch_due_polls(sessions=sessions, settings=settings,
                                         enqueue=lambda ids, token: None, targets=[HOOK]))
        time.sleep(0.06)
    assert leased[:3] == [1, 1, 1] and set(leased[3:]) == {0}
    with sessions() as db:
        tracked = db.scalars(select(TrackedSession)).one()
        events = [event.type for event in db.scalars(select(Event))]
    assert tracked.tracking is Tracking.GAVE_UP and tracked.next_poll_at is None
    assert tracked.last_error == ("gave up: 3 polls in a row never finished (the worker "
                                  "died or hung while polling)")
    assert events == ["tracking.gave_up"]


def test_a_finished_poll_resets_the_count(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = make_settings(database_url, lease_seconds=0.05, pave_timeout=0.01,
                             max_unfinished_polls=2, poll_interval_idle=0.01)
    with sessions.begin() as db:
        add_session(db, "ABC-1")
    for _ in range(2):
        dispatch_due_polls(sessions=sessions, settings=settings,
                           enqueue=lambda ids, token: None)
        time.sleep(0.06)
    sent: list[tuple[list[int], str]] = []
    dispatch_due_polls(sessions=sessions, settings=settings,
                       enqueue=lambda ids, token: sent.append((ids, token)))
    (ids, token), = sent
    poll_leased_sessions(ids=ids, lease_token=token, sessions=sessions, settings=settings,
                         fetch=lambda keys: {k: SessionSnapshot(k, "IDLE") for k in keys})
    with sessions() as db:
        tracked = db.scalars(select(TrackedSession)).one()
    assert tracked.unfinished_polls == 0 and tracked.tracking is Tracking.ACTIVE


def test_a_push_counts_an_unfinished_poll_too(sessions: sessionmaker[Session]) -> None:
    """A push must not let a session that kills its worker escape the bound."""
    import datetime as dt

    from worker.db import utcnow
    from worker.tracking.push import PushOutcome, lease_for_push

    now = utcnow()
    with sessions.begin() as db:
        add_session(db, "POISON-1", lease_token="left-by-a-dead-worker",
                    leased_until=now - dt.timedelta(seconds=1), unfinished_polls=1)
    with sessions.begin() as db:
        outcome, lease = lease_for_push(db=db, session_key="POISON-1", now=now,
                                        lease_seconds=30, autotrack=False)
    assert outcome is PushOutcome.POLLING and lease is not None
    with sessions() as db:
        assert db.scalars(select(TrackedSession)).one().unfinished_polls == 2

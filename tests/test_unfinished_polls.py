"""A session whose polls never finish (the worker dies each time) cannot loop forever; a
message that only waited in the broker counts for nothing."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.helpers import Clock, add_session, all_keys, tick
from worker.delivery.targets import HookTarget
from worker.models import Event, TrackedSession, Tracking
from worker.pave.payload import SessionSnapshot
from worker.tracking.leasing import claim_leased_sessions
from worker.tracking.polling import poll_leased_sessions

HOOK = HookTarget(name="hook", callable="x:y", events=["tracking.gave_up"])


def claim_and_die(sessions: sessionmaker[Session], sent: list[tuple[list[int], str]],
                  now: dt.datetime) -> None:
    """A worker claims the batch, then is killed before it records anything."""
    for ids, token in sent:
        with sessions.begin() as db:
            claim_leased_sessions(db=db, ids=ids, lease_token=token, now=now, lease_seconds=60)


def one(sessions: sessionmaker[Session]) -> TrackedSession:
    with sessions() as db:
        return db.scalars(select(TrackedSession)).one()


def test_gives_up_after_too_many_unfinished_polls(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = make_settings(database_url, max_unfinished_polls=2)
    clock = Clock()
    with sessions.begin() as db:
        add_session(db, "POISON-1", next_poll_at=clock.now)
    leased = []
    for _ in range(6):  # every claim runs out: the worker dies before recording
        sent = tick(sessions, settings, clock, [HOOK])
        leased.append(sum(len(ids) for ids, _ in sent))
        claim_and_die(sessions, sent, clock.now)
        clock.advance(61)
    assert leased[:3] == [1, 1, 1] and set(leased[3:]) == {0}
    tracked = one(sessions)
    with sessions() as db:
        events = [event.type for event in db.scalars(select(Event))]
    assert tracked.tracking is Tracking.GAVE_UP and tracked.next_poll_at is None
    assert tracked.last_error == ("gave up: 3 polls in a row never finished (the worker "
                                  "died or hung while polling)")
    assert events == ["tracking.gave_up"]


def test_messages_that_only_waited_in_the_broker_count_for_nothing(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """A backlog longer than LEASE_SECONDS: tick after tick leases the session and the
    message is never reached in time. That says nothing about the session: it stays
    active, and the late message still polls it once it is reached."""
    settings = make_settings(database_url, max_unfinished_polls=2)
    clock = Clock()
    with sessions.begin() as db:
        add_session(db, "HEALTHY-1", next_poll_at=clock.now)
    for _ in range(10):
        sent = tick(sessions, settings, clock, [HOOK])
        clock.advance(61)
    tracked = one(sessions)
    assert tracked.tracking is Tracking.ACTIVE and tracked.unfinished_polls == 0
    (ids, token), = sent  # the last message, reached after its lease ran out
    report = poll_leased_sessions(
        ids=ids, lease_token=token, sessions=sessions, settings=settings, clock=clock,
        fetch=lambda asked: {k: SessionSnapshot(k, "STARTED") for k in all_keys(asked)})
    assert report.recorded == 1
    tracked = one(sessions)
    assert tracked.status == "STARTED" and tracked.unfinished_polls == 0


def test_the_claim_gives_the_poll_a_whole_lease(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = make_settings(database_url, lease_seconds=60)
    clock = Clock()
    with sessions.begin() as db:
        add_session(db, "ABC-1", next_poll_at=clock.now)
    (ids, token), = tick(sessions, settings, clock, [HOOK])
    claimed_at = clock.advance(50)  # the message waited 50 of the lease's 60 s
    with sessions.begin() as db:
        claim_leased_sessions(db=db, ids=ids, lease_token=token, now=claimed_at,
                              lease_seconds=60)
    clock.advance(30)  # past the tick's lease, within the claim's
    assert tick(sessions, settings, clock, [HOOK]) == []
    tracked = one(sessions)
    assert tracked.leased_until == claimed_at + dt.timedelta(seconds=60)
    assert tracked.unfinished_polls == 1  # until the poll is recorded


def test_a_finished_poll_resets_the_count(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = make_settings(database_url, max_unfinished_polls=2)
    clock = Clock()
    with sessions.begin() as db:
        add_session(db, "ABC-1", next_poll_at=clock.now)
    for _ in range(2):
        claim_and_die(sessions, tick(sessions, settings, clock, [HOOK]), clock.now)
        clock.advance(61)
    assert one(sessions).unfinished_polls == 2
    (ids, token), = tick(sessions, settings, clock, [HOOK])
    poll_leased_sessions(ids=ids, lease_token=token, sessions=sessions, settings=settings,
                         clock=clock,
                         fetch=lambda asked: {k: SessionSnapshot(k, "IDLE")
                                              for k in all_keys(asked)})
    tracked = one(sessions)
    assert tracked.unfinished_polls == 0 and tracked.tracking is Tracking.ACTIVE


def test_a_push_is_counted_when_its_poll_is_claimed(sessions: sessionmaker[Session]) -> None:
    """A push must not let a session that kills its worker escape the bound: its poll
    is claimed like any other, and the claim counts."""
    from worker.tracking.push import PushOutcome, lease_for_push

    clock = Clock()
    with sessions.begin() as db:
        add_session(db, "POISON-1", lease_token="left-by-a-dead-worker",
                    leased_until=clock.now - dt.timedelta(seconds=1), unfinished_polls=1)
    with sessions.begin() as db:
        outcome, lease = lease_for_push(db=db, account="default", session_key="POISON-1",
                                        now=clock.now, lease_seconds=30, autotrack=False)
    assert outcome is PushOutcome.POLLING and lease is not None
    assert one(sessions).unfinished_polls == 1
    session_id, token = lease
    with sessions.begin() as db:
        claim_leased_sessions(db=db, ids=[session_id], lease_token=token, now=clock.now,
                              lease_seconds=30)
    assert one(sessions).unfinished_polls == 2


def test_tracking_again_starts_the_count_afresh(sessions: sessionmaker[Session]) -> None:
    from worker.tracking.requests import TrackRequest
    from worker.tracking.service import track_sessions

    clock = Clock()
    with sessions.begin() as db:
        add_session(db, "ABC-1", tracking=Tracking.GAVE_UP, unfinished_polls=6,
                    lease_token=None, next_poll_at=None)
    with sessions.begin() as db:
        track_sessions(db=db, requests=[TrackRequest("ABC-1")], now=clock.now)
    tracked = one(sessions)
    assert tracked.tracking is Tracking.ACTIVE and tracked.unfinished_polls == 0

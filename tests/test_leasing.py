"""Leases under concurrency, on SQLite and PostgreSQL: no session polled twice at once."""

import datetime as dt
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.helpers import add_session, all_keys
from worker.db import utcnow
from worker.delivery.targets import HookTarget
from worker.models import Delivery, Event, StatusChange, TrackedSession
from worker.pave.fetching import Outcome
from worker.pave.payload import SessionSnapshot
from worker.tracking.leasing import claim_leased_sessions, lease_due_sessions
from worker.tracking.polling import dispatch_due_polls, poll_leased_sessions

HOOK = HookTarget(name="hook", callable="x:y", events=["session.status_changed"])


def lease(sessions: sessionmaker[Session], now: dt.datetime, limit: int = 1000,
          seconds: float = 60) -> tuple[str, list[int]]:
    with sessions.begin() as db:
        token, leased = lease_due_sessions(db=db, now=now, limit=limit, lease_seconds=seconds)
    return token, [row_id for row_id, _ in leased]


def test_only_due_active_sessions_are_leased_oldest_first(
    sessions: sessionmaker[Session]
) -> None:
    now = utcnow()
    with sessions.begin() as db:
        late = add_session(db, "LATE-1", next_poll_at=now - dt.timedelta(seconds=5)).id
        later = add_session(db, "LATE-2", next_poll_at=now - dt.timedelta(seconds=50)).id
        add_session(db, "FUTURE-1", next_poll_at=now + dt.timedelta(seconds=5))
        add_session(db, "DONE-1", next_poll_at=None, tracking="done")
        add_session(db, "STOP-1", next_poll_at=now - dt.timedelta(seconds=5), tracking="stopped")
    token, ids = lease(sessions, now, limit=1)
    assert ids == [later]
    _, ids = lease(sessions, now)
    assert ids == [late]
    assert lease(sessions, now)[1] == []


def test_an_expired_lease_is_leased_again(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    with sessions.begin() as db:
        session_id = add_session(db, "ABC-1", next_poll_at=now).id
    first_token, ids = lease(sessions, now, seconds=30)
    assert ids == [session_id]
    assert lease(sessions, now + dt.timedelta(seconds=29))[1] == []
    second_token, ids = lease(sessions, now + dt.timedelta(seconds=31))
    assert ids == [session_id] and second_token != first_token


def test_a_batch_is_claimed_once(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    with sessions.begin() as db:
        add_session(db, "ABC-1", next_poll_at=now)
    token, ids = lease(sessions, now)
    with sessions.begin() as db:
        _, claimed = claim_leased_sessions(db=db, ids=ids, lease_token=token, now=now,
                                           lease_seconds=60)
    with sessions.begin() as db:
        _, again = claim_leased_sessions(db=db, ids=ids, lease_token=token, now=now,
                                         lease_seconds=60)
    assert [key for _, key, _ in claimed] == ["ABC-1"] and again == []


def test_two_dispatchers_at_once_never_lease_a_session_twice(
    sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as db:
        for number in range(400):
            add_session(db, f"KEY-{number:04d}", next_poll_at=utcnow())
    results: list[list[int]] = []
    barrier = threading.Barrier(4)

    def dispatcher() -> None:
        barrier.wait()
        leased: list[int] = []
        while True:
            _, ids = lease(sessions, utcnow(), limit=25)
            if not ids:
                break
            leased += ids
            time.sleep(0.005)  # let the others in: SQLite would let one thread take all
        results.append(leased)

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = [session_id for leased in results for session_id in leased]
    assert len(everything) == 400 == len(set(everything))
    assert sum(1 for leased in results if leased) >= 2  # they really ran side by side


def fake_fetch(status: str) -> Callable[[Mapping[str, Sequence[str]]], dict[str, Outcome]]:
    def fetch(asked: Mapping[str, Sequence[str]]) -> dict[str, Outcome]:
        return {key: SessionSnapshot(session_key=key, status=status) for key in all_keys(asked)}
    return fetch


def test_a_poll_message_delivered_twice_polls_and_records_once(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = make_settings(database_url)
    with sessions.begin() as db:
        add_session(db, "ABC-1")
    sent: list[tuple[list[int], str]] = []
    dispatch_due_polls(sessions=sessions, settings=settings,
                       enqueue=lambda ids, token: sent.append((ids, token)))
    assert len(sent) == 1
    fetched: list[str] = []

    def counting_fetch(asked: Mapping[str, Sequence[str]]) -> dict[str, Outcome]:
        fetched.extend(all_keys(asked))
        return fake_fetch("IDLE")(asked)

    reports = []
    barrier = threading.Barrier(2)

    def deliver() -> None:
        barrier.wait()
        ids, token = sent[0]
        reports.append(poll_leased_sessions(ids=ids, lease_token=token, sessions=sessions,
                                            settings=settings, fetch=counting_fetch,
                                            targets=[HOOK]))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert fetched == ["ABC-1"]
    assert sorted(report.recorded for report in reports) == [0, 1]
    with sessions() as db:
        assert db.scalar(select(func.count()).select_from(StatusChange)) == 1
        assert db.scalars(select(TrackedSession)).one().poll_count == 1
        assert db.scalar(select(func.count()).select_from(Event)) == 1
        assert db.scalar(select(func.count()).select_from(Delivery)) == 1


def test_a_poll_that_outlived_its_lease_records_nothing(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """The slow worker's answer is dropped once another worker has re-leased the session."""
    settings = make_settings(database_url, lease_seconds=20)
    with sessions.begin() as db:
        add_session(db, "ABC-1")
    token, ids = lease(sessions, utcnow(), seconds=20)

    def slow_fetch(asked: Mapping[str, Sequence[str]]) -> dict[str, Outcome]:
        # While this worker waits on PAVE, its lease runs out and another takes over.
        lease(sessions, utcnow() + dt.timedelta(seconds=21))
        return fake_fetch("COMPLETE")(asked)

    report = poll_leased_sessions(ids=ids, lease_token=token, sessions=sessions,
                                  settings=settings, fetch=slow_fetch, rng=random.Random(0))
    assert report.claimed == 1 and report.recorded == 0
    with sessions() as db:
        tracked = db.scalars(select(TrackedSession)).one()
        assert tracked.status is None and tracked.poll_count == 0


def test_a_session_given_back_unasked_keeps_its_place_in_line(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """A batch that ran out of time gives back the keys it never asked: each is due as of
    its last poll (not the lease's end, where leasing had moved it), so the next tick
    leases it ahead of the sessions that fell due meanwhile."""
    from tests.helpers import Clock
    from worker.pave.fetching import TOO_LATE

    settings = make_settings(database_url)
    clock = Clock()
    polled_at = clock.now - dt.timedelta(seconds=100)
    with sessions.begin() as db:
        unlucky = add_session(db, "UNLUCKY-1", next_poll_at=clock.now - dt.timedelta(seconds=50),
                              last_polled_at=polled_at, status="STARTED").id
    sent: list[tuple[list[int], str]] = []
    dispatch_due_polls(sessions=sessions, settings=settings, clock=clock,
                       enqueue=lambda ids, token: sent.append((ids, token)))
    with sessions.begin() as db:  # others fall due while its batch runs
        others = [add_session(db, f"LATER-{n}", next_poll_at=clock.now - dt.timedelta(
            seconds=10)).id for n in range(3)]
    (ids, token), = sent
    report = poll_leased_sessions(ids=ids, lease_token=token, sessions=sessions,
                                  settings=settings, clock=clock,
                                  fetch=lambda asked: {key: TOO_LATE for key in all_keys(asked)})
    assert report.released == 1 and report.recorded == 0
    with sessions() as db:
        tracked = db.get(TrackedSession, unlucky)
        assert tracked is not None
        assert tracked.next_poll_at == polled_at and tracked.poll_count == 0
        assert tracked.unfinished_polls == 0 and tracked.lease_token is None
    assert lease(sessions, clock.now, limit=1)[1] == [unlucky]
    assert sorted(lease(sessions, clock.now)[1]) == others


def test_a_batch_asks_its_sessions_in_no_set_order(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = make_settings(database_url)
    with sessions.begin() as db:
        for number in range(20):
            add_session(db, f"KEY-{number:02d}")
    sent: list[tuple[list[int], str]] = []
    dispatch_due_polls(sessions=sessions, settings=settings,
                       enqueue=lambda ids, token: sent.append((ids, token)))
    asked: list[list[str]] = []

    def fetch(keys_by_account: Mapping[str, Sequence[str]]) -> dict[str, Outcome]:
        asked.append(all_keys(keys_by_account))
        return fake_fetch("IDLE")(keys_by_account)

    (ids, token), = sent
    poll_leased_sessions(ids=ids, lease_token=token, sessions=sessions, settings=settings,
                         fetch=fetch, rng=random.Random(7))
    assert sorted(asked[0]) == [f"KEY-{n:02d}" for n in range(20)]
    assert asked[0] != sorted(asked[0])

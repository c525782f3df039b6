"""Recording one poll's outcome, on SQLite and PostgreSQL."""

import datetime as dt
import random

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.helpers import add_session
from worker.db import utcnow
from worker.errors import PaveAuthError, PaveNotFound, PaveRateLimited, PaveServerError
from worker.models import StatusChange, TrackedSession, Tracking
from worker.pave.fetching import Outcome
from worker.pave.payload import SessionSnapshot
from worker.tracking.observations import apply_observation

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def snapshot(status: str, updated: float = 0, **fields: object) -> SessionSnapshot:
    return SessionSnapshot(session_key="ABC-1", status=status, updated_at=at(updated),
                           **fields)  # type: ignore[arg-type]


def observe(sessions: sessionmaker[Session], outcome: Outcome, now: dt.datetime,
            **settings: object) -> TrackedSession:
    with sessions.begin() as db:
        tracked = db.scalars(select(TrackedSession)).one()
        apply_observation(db=db, tracked=tracked, outcome=outcome, now=now,
                          settings=make_settings("sqlite://", **settings),
                          rng=random.Random(0))
    with sessions() as db:
        return db.scalars(select(TrackedSession)).one()


def history(sessions: sessionmaker[Session]) -> list[tuple[str | None, str, int]]:
    with sessions() as db:
        return [(c.from_status, c.to_status, c.poll_number)
                for c in db.scalars(select(StatusChange).order_by(StatusChange.id))]


@pytest.fixture
def tracked(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as db:
        add_session(db, "ABC-1", tracked_at=T0, next_poll_at=T0)


@pytest.mark.usefixtures("tracked")
def test_first_status_and_each_change_are_history(sessions: sessionmaker[Session]) -> None:
    observe(sessions, snapshot("IDLE", 0), at(1))
    observe(sessions, snapshot("IDLE", 0), at(2))
    observe(sessions, snapshot("PROCESS", 10), at(12))
    result = observe(sessions, snapshot("COMPLETE", 20), at(22))
    assert history(sessions) == [(None, "IDLE", 1), ("IDLE", "PROCESS", 3),
                                 ("PROCESS", "COMPLETE", 4)]
    assert result.tracking is Tracking.DONE
    assert result.next_poll_at is None and result.finished_at == at(22)
    assert result.poll_count == 4


@pytest.mark.usefixtures("tracked")
def test_next_poll_depends_on_status(sessions: sessionmaker[Session]) -> None:
    # The tick's lag (DISPATCH_INTERVAL) comes off, so the interval is the longest gap.
    idle = observe(sessions, snapshot("IDLE"), at(0), poll_interval=10, poll_interval_idle=100,
                   dispatch_interval=1)
    assert idle.next_poll_at is not None
    assert 89 <= (idle.next_poll_at - at(0)).total_seconds() <= 99
    busy = observe(sessions, snapshot("STARTED", 1), at(1), poll_interval=10,
                   poll_interval_idle=100, dispatch_interval=1)
    assert busy.next_poll_at is not None
    assert 8 <= (busy.next_poll_at - at(1)).total_seconds() <= 9


@pytest.mark.usefixtures("tracked")
def test_an_older_answer_changes_nothing(sessions: sessionmaker[Session]) -> None:
    observe(sessions, snapshot("PROCESS", 10, vehicle={"vin": "NEW"}), at(11))
    stale = observe(sessions, snapshot("IDLE", 5, vehicle={"vin": "OLD"}), at(12))
    assert stale.status == "PROCESS"
    assert stale.vehicle == {"vin": "NEW"}
    assert stale.pave_updated_at == at(10)
    assert history(sessions) == [(None, "PROCESS", 1)]
    assert stale.tracking is Tracking.ACTIVE and stale.poll_count == 2


@pytest.mark.usefixtures("tracked")
def test_fields_are_kept_when_a_later_answer_leaves_them_out(
    sessions: sessionmaker[Session]
) -> None:
    full = {"vin": "5N1", "year": 2017, "make": "Nissan"}
    observe(sessions, snapshot("QC_PASSED", 1, vehicle=full, inspect_started_at=at(0)), at(1))
    later = observe(sessions, snapshot("CONFIRM", 2, vehicle={"vin": "5N1"}), at(2))
    assert later.vehicle == full
    assert later.inspect_started_at == at(0)


@pytest.mark.usefixtures("tracked")
def test_unknown_status_is_recorded_and_polled_on(sessions: sessionmaker[Session]) -> None:
    result = observe(sessions, snapshot("WAITING CONFIRM"), at(1))
    assert result.status == "WAITING CONFIRM" and result.tracking is Tracking.ACTIVE


@pytest.mark.usefixtures("tracked")
def test_terminal_statuses_come_from_settings(sessions: sessionmaker[Session]) -> None:
    result = observe(sessions, snapshot("INVALID"), at(1),
                     terminal_statuses="COMPLETE,EXPIRED")
    assert result.tracking is Tracking.ACTIVE
    result = observe(sessions, snapshot("EXPIRED", 2), at(3),
                     terminal_statuses="COMPLETE,EXPIRED")
    assert result.tracking is Tracking.DONE


@pytest.mark.usefixtures("tracked")
def test_404_ends_tracking_only_after_the_grace_period(sessions: sessionmaker[Session]) -> None:
    missing = PaveNotFound("gone")
    first = observe(sessions, missing, at(0), not_found_grace=30)
    assert first.tracking is Tracking.ACTIVE and first.not_found_since == at(0)
    assert observe(sessions, missing, at(29), not_found_grace=30).tracking is Tracking.ACTIVE
    ended = observe(sessions, missing, at(30), not_found_grace=30)
    assert ended.tracking is Tracking.NOT_FOUND and ended.next_poll_at is None


@pytest.mark.usefixtures("tracked")
def test_a_session_that_appears_resets_the_404_clock(sessions: sessionmaker[Session]) -> None:
    observe(sessions, PaveNotFound("not yet"), at(0), not_found_grace=30)
    seen = observe(sessions, snapshot("IDLE"), at(10), not_found_grace=30)
    assert seen.not_found_since is None and seen.last_error is None


@pytest.mark.usefixtures("tracked")
def test_errors_back_off_and_are_recorded(sessions: sessionmaker[Session]) -> None:
    observe(sessions, snapshot("IDLE"), at(0))
    first = observe(sessions, PaveServerError("PAVE answered HTTP 502"), at(1),
                    poll_interval=10)
    assert first.consecutive_errors == 1
    assert first.last_error == "server_error: PAVE answered HTTP 502"
    assert first.status == "IDLE" and first.tracking is Tracking.ACTIVE
    assert first.next_poll_at is not None
    assert 0 <= (first.next_poll_at - at(1)).total_seconds() <= 20
    second = observe(sessions, PaveAuthError("refused"), at(2), poll_interval=10)
    assert second.consecutive_errors == 2
    recovered = observe(sessions, snapshot("IDLE"), at(3))
    assert recovered.consecutive_errors == 0 and recovered.last_error is None
    assert history(sessions) == [(None, "IDLE", 1)]


@pytest.mark.usefixtures("tracked")
def test_retry_after_is_honoured(sessions: sessionmaker[Session]) -> None:
    result = observe(sessions, PaveRateLimited("429", retry_after=500), at(0), poll_interval=1)
    assert result.next_poll_at is not None
    assert (result.next_poll_at - at(0)).total_seconds() >= 500


@pytest.mark.usefixtures("tracked")
def test_gives_up_past_max_age(sessions: sessionmaker[Session]) -> None:
    assert observe(sessions, snapshot("IDLE"), at(99), poll_max_age=100).tracking \
        is Tracking.ACTIVE
    result = observe(sessions, snapshot("STARTED", 1), at(100), poll_max_age=100)
    assert result.tracking is Tracking.GAVE_UP and result.next_poll_at is None
    assert result.status == "STARTED"


@pytest.mark.usefixtures("tracked")
def test_terminal_status_wins_over_max_age(sessions: sessionmaker[Session]) -> None:
    result = observe(sessions, snapshot("COMPLETE"), at(1000), poll_max_age=100)
    assert result.tracking is Tracking.DONE


def test_times_round_trip_as_utc(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    with sessions.begin() as db:
        add_session(db, "ABC-2", tracked_at=now)
    with sessions() as db:
        stored = db.scalars(select(TrackedSession)).one().tracked_at
    assert stored == now and stored.tzinfo is not None


@pytest.mark.usefixtures("tracked")
def test_when_each_status_began_and_the_capture_link_are_kept(
        sessions: sessionmaker[Session]) -> None:
    link = "https://dev.paveinspect.com/valet/ABC-1/?l=en"
    assert observe(sessions, snapshot("IDLE", 0, redirect_url=link), at(1)).status_since \
        == at(1)
    kept = observe(sessions, snapshot("IDLE", 0), at(5))  # same status, link left out
    assert kept.status_since == at(1) and kept.redirect_url == link
    moved = observe(sessions, snapshot("STARTED", 10), at(12))
    assert moved.status_since == at(12) and moved.redirect_url == link

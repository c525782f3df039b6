"""`session.stalled` and `session.reminder`, recorded by beat ticks from the database alone,
on SQLite and PostgreSQL with a fixed clock: once per status for a stall, numbered
reminders while the status waits on the customer, stopped by progress, a terminal
status or untracking."""

from __future__ import annotations

import datetime as dt
import json
import random
import zoneinfo
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.helpers import add_session
from worker.config import Settings
from worker.delivery.targets import HookTarget
from worker.models import Delivery, Event, TrackedSession
from worker.pave.payload import SessionSnapshot
from worker.tracking.nudges import after_quiet_hours, has_due_nudges, record_due_nudges
from worker.tracking.observations import apply_observation
from worker.tracking.service import untrack_sessions

T0 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
LINK = "https://dev.paveinspect.com/valet/ABC-1/?l=en"
NUDGED = HookTarget(name="bdc", callable="x:y", events=["session.stalled",
                                                        "session.reminder"])


def hours(value: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=value)


def settings_for(database_url: str, **overrides: Any) -> Settings:
    return make_settings(database_url, **{"stall_after": "IDLE=1h,STARTED=2h",
                                          "remind_after": "1h,4h", **overrides})


def observe(sessions: sessionmaker[Session], settings: Settings, status: str,
            now: dt.datetime) -> None:
    with sessions.begin() as db:
        tracked = db.scalars(select(TrackedSession)).one()
        apply_observation(db=db, tracked=tracked, now=now, settings=settings,
                          rng=random.Random(0),
                          outcome=SessionSnapshot("ABC-1", status, redirect_url=LINK))


def tick(sessions: sessionmaker[Session], settings: Settings, now: dt.datetime) -> int:
    with sessions.begin() as db:
        return record_due_nudges(db=db, settings=settings, targets=[NUDGED], now=now,
                                 dealer_names={"default": "North Toyota"})


def nudges(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    with sessions() as db:
        bodies = db.scalars(select(Event.body).where(Event.type.in_(
            ["session.stalled", "session.reminder"])).order_by(Event.id)).all()
    return [json.loads(body) for body in bodies]


def summary(sessions: sessionmaker[Session]) -> list[tuple[str, Any]]:
    return [(n["type"], n["data"].get("reminder") or n["data"].get("stalled_status"))
            for n in nudges(sessions)]


def start(sessions: sessionmaker[Session], settings: Settings) -> None:
    with sessions.begin() as db:
        add_session(db, "ABC-1", tracked_at=T0, next_poll_at=T0)
    observe(sessions, settings, "IDLE", T0)


def test_a_stall_once_per_status_and_numbered_reminders(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    settings = settings_for(database_url)
    start(sessions, settings)
    with sessions() as db:
        assert not has_due_nudges(db=db, now=hours(0.5))
        assert has_due_nudges(db=db, now=hours(1))
    assert tick(sessions, settings, hours(0.5)) == 0
    assert tick(sessions, settings, hours(1)) == 2  # stalled, and the first reminder
    assert tick(sessions, settings, hours(2)) == 0
    assert tick(sessions, settings, hours(4.5)) == 1
    assert tick(sessions, settings, hours(100)) == 0  # every reminder sent
    assert summary(sessions) == [("session.stalled", "IDLE"), ("session.reminder", 1),
                                 ("session.reminder", 2)]
    stalled, first, second = nudges(sessions)
    assert stalled["data"]["stalled_for"] == 3600
    assert first["data"]["capture_url"] == LINK and first["data"]["reminder"] == 1
    assert first["data"]["dealer_name"] == "North Toyota"
    assert second["data"]["reminder"] == 2


def test_progress_starts_over_and_the_end_stops_it(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    settings = settings_for(database_url)
    start(sessions, settings)
    tick(sessions, settings, hours(1.5))  # IDLE: stalled, reminder 1
    observe(sessions, settings, "STARTED", hours(2))
    assert tick(sessions, settings, hours(3.1)) == 1  # STARTED's own reminder 1
    assert tick(sessions, settings, hours(4)) == 1  # and STARTED's stall, at 2 h
    observe(sessions, settings, "COMPLETE", hours(5))
    assert tick(sessions, settings, hours(50)) == 0
    assert summary(sessions) == [("session.stalled", "IDLE"), ("session.reminder", 1),
                                 ("session.reminder", 1), ("session.stalled", "STARTED")]
    with sessions() as db:
        assert db.scalars(select(TrackedSession.nudge_at)).one() is None


def test_an_overdue_beat_sends_one_reminder_not_a_burst(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    settings = settings_for(database_url, stall_after="")
    start(sessions, settings)
    assert tick(sessions, settings, hours(9)) == 1
    assert summary(sessions) == [("session.reminder", 2)]


def test_untracking_stops_reminders_and_statuses_that_wait_on_the_dealer_get_none(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    settings = settings_for(database_url, stall_after="", remind_statuses="STARTED")
    start(sessions, settings)  # IDLE is not in REMIND_STATUSES here
    assert tick(sessions, settings, hours(2)) == 0
    observe(sessions, settings, "STARTED", hours(3))
    with sessions.begin() as db:
        untrack_sessions(db=db, keys=["ABC-1"], now=hours(3.5))
    assert tick(sessions, settings, hours(9)) == 0 and nudges(sessions) == []


def test_two_ticks_at_once_record_each_nudge_once(pg_url: str) -> None:
    """Two beats: the second tick skips the rows the first holds (SKIP LOCKED) instead of
    waiting or recording them again; once the first commits, nothing is left to do."""
    from worker.db import session_factory

    sessions = session_factory(pg_url)
    settings = settings_for(pg_url)
    start(sessions, settings)
    first = sessions()
    first.begin()
    recorded = record_due_nudges(db=first, settings=settings, targets=[NUDGED],
                                 now=hours(1), dealer_names={})
    assert recorded == 2
    assert tick(sessions, settings, hours(1)) == 0  # while the first holds the row
    first.commit()
    first.close()
    assert tick(sessions, settings, hours(1)) == 0
    assert summary(sessions) == [("session.stalled", "IDLE"), ("session.reminder", 1)]


QUIET = (dt.time(21, 0), dt.time(8, 0))
TORONTO = "America/Toronto"


def toronto(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=zoneinfo.ZoneInfo(TORONTO)).astimezone(dt.UTC)


@pytest.mark.parametrize("due, sent", [
    # DST ends at 02:00 on 1 November 2026: 23:00 EDT (UTC-4) waits for 08:00 EST (UTC-5).
    (toronto(2026, 10, 31, 23, 0), dt.datetime(2026, 11, 1, 13, 0, tzinfo=dt.UTC)),
    # DST starts at 02:00 on 8 March 2026: 22:00 EST waits for 08:00 EDT (UTC-4).
    (toronto(2026, 3, 7, 22, 0), dt.datetime(2026, 3, 8, 12, 0, tzinfo=dt.UTC)),
    (toronto(2026, 11, 30, 3, 0), toronto(2026, 11, 30, 8, 0)),  # after midnight
    (toronto(2026, 11, 30, 8, 0), toronto(2026, 11, 30, 8, 0)),  # the window has ended
    (toronto(2026, 11, 30, 20, 59), toronto(2026, 11, 30, 20, 59)),  # not yet quiet
])
def test_quiet_hours_in_the_accounts_local_time(due: dt.datetime, sent: dt.datetime) -> None:
    assert after_quiet_hours(due, QUIET, TORONTO) == sent
    assert after_quiet_hours(due, None, TORONTO) == due


def test_a_window_within_one_day() -> None:
    window = (dt.time(1, 0), dt.time(6, 0))
    assert after_quiet_hours(toronto(2026, 6, 1, 3, 0), window, TORONTO) \
        == toronto(2026, 6, 1, 6, 0)
    assert after_quiet_hours(toronto(2026, 6, 1, 7, 0), window, TORONTO) \
        == toronto(2026, 6, 1, 7, 0)


def test_a_reminder_due_at_night_is_first_attempted_when_the_night_ends(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    """Recorded at once (so exactly once), delivered at 08:00 local, across a DST change."""
    settings = settings_for(database_url, stall_after="", remind_after="2h",
                            quiet_hours="21:00-08:00")
    entered = toronto(2026, 10, 31, 21, 0)
    with sessions.begin() as db:
        add_session(db, "ABC-1", tracked_at=entered, next_poll_at=entered)
    observe(sessions, settings, "IDLE", entered)
    due = entered + dt.timedelta(hours=2)  # 23:00 EDT
    with sessions.begin() as db:
        assert record_due_nudges(db=db, settings=settings, targets=[NUDGED], now=due,
                                 dealer_names={}, timezones={"default": TORONTO}) == 1
    with sessions() as db:
        first_attempt = db.scalars(select(Delivery.next_attempt_at)).one()
    assert first_attempt == dt.datetime(2026, 11, 1, 13, 0, tzinfo=dt.UTC)  # 08:00 EST

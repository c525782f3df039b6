"""`account.digest`: once a day per account at DIGEST_AT in its own timezone, on SQLite and
PostgreSQL with a fixed clock: the last 24 hours' counts, completion rate, median time to
COMPLETE and the stalled list; exactly once per account and day, whatever beats run and
restart; late when the beat was away, never for the days before."""

from __future__ import annotations

import datetime as dt
import json
import threading
import zoneinfo
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.helpers import add_session
from worker.accounts import Account, Accounts
from worker.db import session_factory
from worker.delivery.targets import AdfTarget, EmailTarget, HookTarget
from worker.models import Delivery, Event, Tracking
from worker.tracking.digests import DigestDay, digests_due, latest_digest_day, record_digests

TORONTO = "America/Toronto"
SEVEN_THIRTY = dt.time(7, 30)
STALL_AFTER = {"IDLE": 86400.0, "STARTED": 7200.0}


def account(name: str, timezone: str = TORONTO) -> Account:
    return Account(name=name, dealer_name=f"{name.title()} Toyota", timezone=timezone,
                   api_url="http://127.0.0.1:9/v1")


NORTH, SOUTH = account("north"), account("south", "America/Vancouver")
ACCOUNTS = Accounts((NORTH, SOUTH))
DIGESTS = HookTarget(name="manager", callable="x:y", events=["account.digest"])


def toronto(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=zoneinfo.ZoneInfo(TORONTO)).astimezone(dt.UTC)


def tick(sessions: sessionmaker[Session], now: dt.datetime, *, accounts: Accounts = ACCOUNTS,
         targets: Any = (DIGESTS,)) -> int:
    """One beat tick's digests, as the task does it: a read-only look, then a write."""
    with sessions() as db:
        due = digests_due(db=db, accounts=accounts, digest_at=SEVEN_THIRTY,
                          targets=targets, now=now)
    if not due:
        return 0
    with sessions.begin() as db:
        return record_digests(db=db, days=due, stall_after=STALL_AFTER, targets=targets,
                              now=now)


def digests(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    with sessions() as db:
        bodies = db.scalars(select(Event.body).where(Event.type == "account.digest")
                            .order_by(Event.id)).all()
    return [json.loads(body) for body in bodies]


def days(sessions: sessionmaker[Session]) -> list[tuple[str, str]]:
    return [(d["data"]["account"], d["data"]["date"]) for d in digests(sessions)]


@pytest.mark.parametrize("now, date, due_at", [
    # 07:30 EST is 12:30 UTC: at 12:29 UTC the latest digest is yesterday's.
    (dt.datetime(2026, 12, 5, 12, 29, tzinfo=dt.UTC), "2026-12-04", toronto(2026, 12, 4, 7, 30)),
    (dt.datetime(2026, 12, 5, 12, 30, tzinfo=dt.UTC), "2026-12-05", toronto(2026, 12, 5, 7, 30)),
    (dt.datetime(2026, 12, 6, 4, 0, tzinfo=dt.UTC), "2026-12-05", toronto(2026, 12, 5, 7, 30)),
    # Across DST: 07:30 EDT (11:30 UTC) on 31 October, 07:30 EST (12:30 UTC) on 1 November.
    (dt.datetime(2026, 10, 31, 11, 30, tzinfo=dt.UTC), "2026-10-31",
     dt.datetime(2026, 10, 31, 11, 30, tzinfo=dt.UTC)),
    (dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC), "2026-10-31",
     dt.datetime(2026, 10, 31, 11, 30, tzinfo=dt.UTC)),
    (dt.datetime(2026, 11, 1, 12, 30, tzinfo=dt.UTC), "2026-11-01",
     dt.datetime(2026, 11, 1, 12, 30, tzinfo=dt.UTC)),
])
def test_the_latest_digest_day_is_in_the_accounts_local_time(
        now: dt.datetime, date: str, due_at: dt.datetime) -> None:
    day = latest_digest_day(NORTH, digest_at=SEVEN_THIRTY, now=now)
    assert (day.date.isoformat(), day.due_at) == (date, due_at)
    assert day.dedupe_key == f"account.digest:{date}"


def test_a_digest_time_that_dst_skips_falls_an_hour_later() -> None:
    """02:30 does not exist in Toronto on 8 March 2026: that day's digest goes at 03:30 EDT
    (07:30 UTC), once."""
    day = latest_digest_day(NORTH, digest_at=dt.time(2, 30),
                            now=dt.datetime(2026, 3, 8, 7, 30, tzinfo=dt.UTC))
    assert day.date == dt.date(2026, 3, 8)
    assert day.due_at == dt.datetime(2026, 3, 8, 7, 30, tzinfo=dt.UTC)


def seed(db: Session, due_at: dt.datetime) -> None:
    """North's day: in the 24 hours before its digest, five tracked, three completed (in
    1 h, 2 h and 6 h), one expired and one stopped; one completed the day before; two
    stalled now. South has one session, which north's digest never counts."""
    def at(hours: float) -> dt.datetime:
        return due_at + dt.timedelta(hours=hours)

    def ended(key: str, tracked: float, finished: float, status: str,
              tracking: Tracking = Tracking.DONE) -> None:
        add_session(db, key, account="north", status=status, tracking=tracking,
                    tracked_at=at(tracked), finished_at=at(finished), next_poll_at=None)

    ended("DONE-1H", -20, -19, "COMPLETE")
    ended("DONE-2H", -10, -8, "COMPLETE")
    ended("DONE-6H", -30, -24, "COMPLETE")  # tracked before the period, finished at its start
    ended("EXPIRED-1", -23, -1, "EXPIRED")
    ended("STOPPED-1", -5, -4, "STARTED", Tracking.STOPPED)
    ended("YESTERDAY", -40, -24.5, "COMPLETE")  # finished before the period: not counted
    ended("AFTER", -2, 0.5, "COMPLETE")  # finished after DIGEST_AT: tomorrow's digest's
    add_session(db, "STUCK-IDLE", account="north", status="IDLE", tracked_at=at(-30),
                status_since=at(-30), user_metadata={"customer_name": "Jane Smith"},
                vehicle={"year": 2017, "make": "Nissan", "model": "Rogue", "vin": "5N1"},
                redirect_url="https://dev.paveinspect.com/valet/STUCK-IDLE/")
    add_session(db, "STUCK-STARTED", account="north", status="STARTED", tracked_at=at(-3),
                status_since=at(-3), options={"sms": {"to_name": "Sam Lee"}})
    add_session(db, "FRESH", account="north", status="IDLE", tracked_at=at(-1),
                status_since=at(-1))
    add_session(db, "SOUTH-1", account="south", status="IDLE", tracked_at=at(-1),
                status_since=at(-40))


def test_the_digest_counts_the_24_hours_before_digest_at(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    due_at = toronto(2026, 12, 5, 7, 30)
    with sessions.begin() as db:
        seed(db, due_at)
    now = due_at + dt.timedelta(minutes=1)
    assert tick(sessions, now, accounts=Accounts((NORTH,))) == 1
    (document,) = digests(sessions)
    data = document["data"]
    assert document["type"] == "account.digest"
    assert document["timestamp"] == "2026-12-05T12:31:00Z"
    assert data["account"] == "north" and data["dealer_name"] == "North Toyota"
    assert data["date"] == "2026-12-05" and data["timezone"] == TORONTO
    assert data["period"] == {"from": "2026-12-04T12:30:00Z", "to": "2026-12-05T12:30:00Z"}
    # Tracked in the period: DONE-1H, DONE-2H, EXPIRED-1, STOPPED-1, STUCK-STARTED, FRESH,
    # and AFTER (tracked 2 h before; it finished after).
    assert data["tracked"] == 7
    assert data["outcomes"] == {"completed": 3, "expired": 1, "invalid": 0, "other": 0,
                                "not_found": 0, "gave_up": 0, "stopped": 1}
    assert data["ended"] == 5 and data["completion_rate"] == 0.6
    assert data["median_time_to_complete"] == 2 * 3600
    assert data["in_progress"] == 3  # STUCK-IDLE, STUCK-STARTED, FRESH (south's not)
    assert data["stalled_count"] == 2
    idle, started = data["stalled"]
    assert idle == {"session_key": "STUCK-IDLE", "status": "IDLE",
                    "status_since": "2026-12-04T06:30:00Z", "stalled_for": 30 * 3600 + 60,
                    "customer_name": "Jane Smith",
                    "vehicle": {"year": 2017, "make": "Nissan", "model": "Rogue", "vin": "5N1"},
                    "capture_url": "https://dev.paveinspect.com/valet/STUCK-IDLE/"}
    assert started["session_key"] == "STUCK-STARTED"
    assert started["customer_name"] == "Sam Lee" and started["vehicle"] is None


def test_a_quiet_day_has_no_rate_and_no_median(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    assert tick(sessions, toronto(2026, 12, 5, 7, 30), accounts=Accounts((NORTH,))) == 1
    data = digests(sessions)[0]["data"]
    assert (data["tracked"], data["ended"], data["completion_rate"],
            data["median_time_to_complete"], data["stalled"]) == (0, 0, None, None, [])


def test_once_per_account_and_day_through_ticks_and_a_restart(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    """Each account at its own 07:30 (Toronto, then Vancouver three hours later); ticks
    between digests record nothing; a new process (no memory but the database) neither."""
    assert tick(sessions, toronto(2026, 12, 5, 7, 29)) == 2  # both: yesterday's, late
    assert tick(sessions, toronto(2026, 12, 5, 7, 29, 30)) == 0
    assert tick(sessions, toronto(2026, 12, 5, 7, 30)) == 1  # north's today
    assert tick(sessions, toronto(2026, 12, 5, 9, 0)) == 0
    restarted = session_factory(database_url)  # the same database, read afresh
    assert tick(restarted, toronto(2026, 12, 5, 10, 29)) == 0
    assert tick(restarted, toronto(2026, 12, 5, 10, 30)) == 1  # 07:30 in Vancouver
    assert tick(restarted, toronto(2026, 12, 5, 23, 0)) == 0
    assert days(sessions) == [("north", "2026-12-04"), ("south", "2026-12-04"),
                              ("north", "2026-12-05"), ("south", "2026-12-05")]


def test_a_beat_away_for_days_sends_the_latest_digest_only(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    assert tick(sessions, toronto(2026, 12, 1, 8, 0), accounts=Accounts((NORTH,))) == 1
    # Away from the 1st at 08:00 to the 5th at 11:00: the 2nd to the 4th are not sent.
    assert tick(sessions, toronto(2026, 12, 5, 11, 0), accounts=Accounts((NORTH,))) == 1
    assert days(sessions) == [("north", "2026-12-01"), ("north", "2026-12-05")]


def test_one_delivery_per_subscribed_target_and_none_unsubscribed(
        database_url: str, sessions: sessionmaker[Session]) -> None:
    north_only = HookTarget(name="north-manager", callable="x:y",
                            events=["account.digest"], accounts=["north"])
    completions = HookTarget(name="crm", callable="x:y")  # session.completed only
    now = toronto(2026, 12, 5, 10, 30)
    targets = (DIGESTS, north_only, completions)
    assert tick(sessions, now, targets=targets) == 3  # manager ×2, north-manager ×1
    assert tick(sessions, now, targets=(completions,)) == 0
    with sessions() as db:
        assert db.scalar(select(func.count()).select_from(Event)) == 2
        rows = db.execute(select(Event.account, Delivery.target)
                          .join(Delivery, Delivery.event_id == Event.id)
                          .order_by(Event.account, Delivery.target)).all()
    assert [tuple(row) for row in rows] == [("north", "manager"), ("north", "north-manager"),
                                            ("south", "manager")]


def test_two_beats_at_once_record_each_digest_once(pg_url: str) -> None:
    """Both beats look, both find it due, both compute it and insert at once: the unique
    index keeps one, and only that one gets deliveries."""
    sessions = session_factory(pg_url)
    now = toronto(2026, 12, 5, 7, 30)
    with sessions() as db:
        due = digests_due(db=db, accounts=Accounts((NORTH,)), digest_at=SEVEN_THIRTY,
                          targets=[DIGESTS], now=now)
    assert [day.date for day in due] == [dt.date(2026, 12, 5)]
    together = threading.Barrier(2)
    added: list[int] = []

    def beat(days_due: list[DigestDay]) -> None:
        with sessions.begin() as db:
            together.wait(timeout=10)
            added.append(record_digests(db=db, days=days_due, stall_after=STALL_AFTER,
                                        targets=[DIGESTS], now=now))

    beats = [threading.Thread(target=beat, args=(due,)) for _ in range(2)]
    for thread in beats:
        thread.start()
    for thread in beats:
        thread.join(timeout=30)
    assert sorted(added) == [0, 1]
    assert days(sessions) == [("north", "2026-12-05")]
    with sessions() as db:
        assert db.scalar(select(func.count()).select_from(Delivery)) == 1


def test_digest_at_is_a_local_time_of_day() -> None:
    assert make_settings("sqlite://", digest_at="07:30").digest_at == SEVEN_THIRTY
    assert make_settings("sqlite://", digest_at=" 18:05 ").digest_at == dt.time(18, 5)
    assert make_settings("sqlite://").digest_at is None


@pytest.mark.parametrize("garbage", ["7.30", "25:00", "07:60", "0730", "", "07:30+01:00",
                                     "noon", "07:30:00:00", "\x00"])
def test_a_bad_digest_at_is_refused_by_name(garbage: str) -> None:
    with pytest.raises(ValueError, match="digest_at") as refused:
        make_settings("sqlite://", digest_at=garbage)
    assert "like 07:30" in str(refused.value)


def test_a_digest_goes_to_an_address_of_the_dealers_own() -> None:
    with pytest.raises(ValueError, match="EMAIL_TO"):
        EmailTarget(name="digest", smtp_url="smtp://127.0.0.1:25", sender="a@b.example",
                    events=["account.digest"])
    with pytest.raises(ValueError, match="not one"):
        AdfTarget(name="crm", url="https://crm.example/adf", events=["account.digest"])

"""Sessions that wait on the customer (SPEC, "Nudges and digests"): what is stuck now, and
the `session.stalled` and `session.reminder` events a beat tick records for them. From
the database alone; PAVE is not asked.

A session is stalled when it has been in its current status longer than STALL_AFTER says
for that status. `status_since` is when the tracker first saw the status; a status seen
before migration 0009 has none, and counts from its next change.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from worker.config import Settings
from worker.delivery.events import EventSpec, Observed
from worker.delivery.outbox import record_events
from worker.delivery.targets import Target
from worker.models import TrackedSession, Tracking
from worker.tracking.leasing import IS_ACTIVE


@dataclass(frozen=True)
class Stalled:
    session_key: str
    account: str
    status: str
    status_since: dt.datetime
    stalled_for: float  # seconds in the status so far
    allowed: float  # STALL_AFTER for the status
    tracked: TrackedSession = field(repr=False, compare=False)  # the row, for its details


def is_stalled(stall_after: Mapping[str, float], now: dt.datetime,
               accounts: Sequence[str] | None = None) -> ColumnElement[bool]:
    """Active, and in its status longer than STALL_AFTER allows (of these accounts)."""
    past = or_(*(and_(TrackedSession.status == status,
                      TrackedSession.status_since <= now - dt.timedelta(seconds=seconds))
                 for status, seconds in stall_after.items()))
    stalled = and_(TrackedSession.tracking == Tracking.ACTIVE, past)
    if accounts is not None:
        stalled = and_(stalled, TrackedSession.account.in_(list(accounts)))
    return stalled


def stalled_sessions(
    *, db: Session, stall_after: Mapping[str, float], now: dt.datetime,
    accounts: Sequence[str] | None = None, limit: int | None = None,
) -> list[Stalled]:
    """Active sessions past their status's STALL_AFTER, longest stuck first."""
    if not stall_after:
        return []
    query = (select(TrackedSession)
             .where(is_stalled(stall_after, now, accounts))
             .order_by(TrackedSession.status_since, TrackedSession.id))
    if limit is not None:
        query = query.limit(limit)
    return [Stalled(session_key=tracked.session_key, account=tracked.account,
                    status=tracked.status or "", status_since=tracked.status_since,
                    stalled_for=(now - tracked.status_since).total_seconds(),
                    allowed=stall_after[tracked.status or ""], tracked=tracked)
            for tracked in db.scalars(query) if tracked.status_since is not None]


def count_stalled(*, db: Session, stall_after: Mapping[str, float], now: dt.datetime,
                  accounts: Sequence[str] | None = None) -> int:
    if not stall_after:
        return 0
    return db.scalar(select(func.count()).select_from(TrackedSession)
                     .where(is_stalled(stall_after, now, accounts))) or 0


def next_nudge_at(tracked: TrackedSession, settings: Settings) -> dt.datetime | None:
    """When this session's next nudge may fall due: its stall (once per status), or its
    next reminder (while the status waits on the customer); None when neither can."""
    if tracked.status_since is None or tracked.tracking is not Tracking.ACTIVE:
        return None
    status = tracked.status or ""
    times = []
    if status in settings.stall_after and not tracked.stall_announced:
        times.append(tracked.status_since
                     + dt.timedelta(seconds=settings.stall_after[status]))
    if status in settings.remind_statuses and tracked.reminders_sent < len(
            settings.remind_after):
        times.append(tracked.status_since + dt.timedelta(
            seconds=settings.remind_after[tracked.reminders_sent]))
    return min(times) if times else None


def nudges_due(tracked: TrackedSession, settings: Settings,
               now: dt.datetime) -> tuple[EventSpec, ...]:
    """The nudges due at `now`, marked as sent on the row. Of several reminders overdue at
    once (the beat was away), only the latest goes: a customer gets one message, not a
    burst. The dedupe keys name the status entry, so each is recorded once."""
    if tracked.status_since is None:
        return ()
    status = tracked.status or ""
    entry = f"{status}@{tracked.status_since.timestamp():.3f}"[:60]
    stalled_for = (now - tracked.status_since).total_seconds()
    nudges = []
    limit = settings.stall_after.get(status)
    if limit is not None and not tracked.stall_announced and stalled_for >= limit:
        tracked.stall_announced = True
        nudges.append(EventSpec("session.stalled", f"session.stalled:{entry}",
                                {"stalled_status": status,
                                 "stalled_for": round(stalled_for)}))
    if status in settings.remind_statuses:
        due = sum(1 for seconds in settings.remind_after if stalled_for >= seconds)
        if due > tracked.reminders_sent:
            tracked.reminders_sent = due
            nudges.append(EventSpec("session.reminder", f"session.reminder:{entry}:{due}",
                                    {"reminder": due, "capture_url": tracked.redirect_url}))
    return tuple(nudges)


def after_quiet_hours(moment: dt.datetime, window: tuple[dt.time, dt.time] | None,
                      timezone: str) -> dt.datetime:
    """`moment`, or, when it falls in the quiet window of `timezone`'s local time, the
    window's end: a local wall-clock time, so a DST change in between is accounted for."""
    if window is None:
        return moment
    zone = zoneinfo.ZoneInfo(timezone)
    local = moment.astimezone(zone)
    start, end = window
    clock = local.time()
    inside = (start <= clock or clock < end) if start > end else start <= clock < end
    if not inside:
        return moment
    day = local.date() if clock < end else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, end, tzinfo=zone).astimezone(dt.UTC)


def nudge_has_come(now: dt.datetime) -> ColumnElement[bool]:
    """Active, with a `nudge_at` that has come: the predicate of the partial index
    `ix_tracked_sessions_nudge`, so PostgreSQL reads it as one range scan."""
    return and_(IS_ACTIVE, TrackedSession.nudge_at.is_not(None),
                TrackedSession.nudge_at <= now)


def has_due_nudges(*, db: Session, now: dt.datetime) -> bool:
    """Whether any nudge has come, read without a write lock (on SQLite, taking one every
    tick for nothing would hold up the polls)."""
    return db.scalar(select(TrackedSession.id).where(nudge_has_come(now)).limit(1)) \
        is not None


def due_nudges_query(*, now: dt.datetime, limit: int) -> Select[TrackedSession]:
    """The rows a tick nudges, oldest nudge first, skipping rows another tick holds (the
    benchmark shows its plan)."""
    return (select(TrackedSession)
            .where(nudge_has_come(now))
            .order_by(TrackedSession.nudge_at)
            .limit(limit)
            .with_for_update(skip_locked=True))


def record_due_nudges(
    *, db: Session, settings: Settings, targets: Sequence[Target], now: dt.datetime,
    dealer_names: Mapping[str, str | None], timezones: Mapping[str, str] | None = None,
    limit: int = 1000,
) -> int:
    """A beat tick's nudges: the active sessions whose `nudge_at` has come (one range scan
    of `ix_tracked_sessions_nudge`), each event recorded in this transaction, `nudge_at`
    moved on. Rows another tick holds are skipped, never waited for. A reminder falling
    due in QUIET_HOURS (the account's local time, `timezones`) is recorded now and first
    attempted when the window ends. Returns how many events were recorded."""
    due = db.scalars(due_nudges_query(now=now, limit=limit)).all()
    recorded = 0
    for tracked in due:
        nudges = nudges_due(tracked, settings, now)
        tracked.nudge_at = next_nudge_at(tracked, settings)
        for nudge in nudges:
            first_attempt_at = now
            if nudge.type == "session.reminder":
                first_attempt_at = after_quiet_hours(
                    now, settings.quiet_hours, (timezones or {}).get(tracked.account, "UTC"))
            record_events(db=db, tracked=tracked, observed=Observed(nudges=(nudge,)),
                          targets=targets, now=now, first_attempt_at=first_attempt_at,
                          dealer_name=dealer_names.get(tracked.account))
            recorded += 1
    return recorded

"""`account.digest` (SPEC, "Nudges and digests"): once a day per account, at DIGEST_AT
in the account's own timezone, the last 24 hours of its inspections, from the database
alone.

A digest is an account's own event, keyed by its local date: the unique index on
(account, dedupe key) makes it exist once, whatever beats run and restart. A beat tick
looks, without a write lock, whether the latest digest of each account (the last
DIGEST_AT that has come, local time) is recorded yet; only then it computes and records
it. So a beat that was away at DIGEST_AT sends the day's digest when it is back, until
the next day's is due; it never sends the days it missed before that.

The period is the 24 hours before that DIGEST_AT, whenever the digest is computed; the
stalled list and the sessions in progress are as they are when it is.
"""

from __future__ import annotations

import datetime as dt
import statistics
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.accounts import Account, Accounts
from worker.delivery.events import STATUS_EVENTS, account_event_document
from worker.delivery.outbox import record_account_event
from worker.delivery.targets import Target
from worker.models import Event, TrackedSession, Tracking
from worker.tracking.nudges import count_stalled, stalled_sessions
from worker.views import iso

DIGEST = "account.digest"
PERIOD = dt.timedelta(hours=24)
STALLED_LISTED = 25  # a phone screen's worth; `stalled_count` says how many in all

# What became of a session whose tracking ended: its terminal status, or how tracking ended.
OUTCOMES = ("completed", "expired", "invalid", "other", "not_found", "gave_up", "stopped")
_STATUS_OUTCOMES = {status: event.removeprefix("session.")
                    for status, event in STATUS_EVENTS.items()}


@dataclass(frozen=True)
class DigestDay:
    """One account's digest for one local date, due at DIGEST_AT on it."""

    account: Account
    date: dt.date
    due_at: dt.datetime  # UTC

    @property
    def dedupe_key(self) -> str:
        return f"{DIGEST}:{self.date.isoformat()}"


def latest_digest_day(account: Account, *, digest_at: dt.time, now: dt.datetime
                      ) -> DigestDay:
    """The account's digest whose DIGEST_AT (its local wall-clock time) came last, at or
    before `now`. A DIGEST_AT that a DST change skips on some day falls an hour later
    that day (zoneinfo's reading of a missing local time); one it repeats, the first time."""
    zone = zoneinfo.ZoneInfo(account.timezone)
    today = now.astimezone(zone).date()
    for date in (today, today - dt.timedelta(days=1)):
        due_at = dt.datetime.combine(date, digest_at, tzinfo=zone).astimezone(dt.UTC)
        if due_at <= now:
            return DigestDay(account=account, date=date, due_at=due_at)
    raise AssertionError("yesterday's DIGEST_AT is always past")  # pragma: no cover


def digests_due(*, db: Session, accounts: Accounts, digest_at: dt.time,
                targets: Sequence[Target], now: dt.datetime) -> list[DigestDay]:
    """Each account's latest digest not recorded yet, of the accounts some target takes
    digests of. Reads only (one index lookup of `ix_events_account_dedupe`)."""
    days = [latest_digest_day(account, digest_at=digest_at, now=now) for account in accounts
            if any(target.wants(DIGEST, account.name) for target in targets)]
    if not days:
        return []
    recorded = set(db.execute(
        select(Event.account, Event.dedupe_key)
        .where(Event.session_id.is_(None),
               Event.account.in_([day.account.name for day in days]),
               Event.dedupe_key.in_({day.dedupe_key for day in days}))))
    return [day for day in days if (day.account.name, day.dedupe_key) not in recorded]


def record_digests(*, db: Session, days: Sequence[DigestDay], stall_after: dict[str, float],
                   targets: Sequence[Target], now: dt.datetime) -> int:
    """Compute and record these digests in this transaction; a digest another beat has
    recorded meanwhile is left as it is. Returns how many deliveries were added."""
    added = 0
    for day in days:
        document = account_event_document(
            event_type=DIGEST, account=day.account.name,
            dealer_name=day.account.dealer_name, occurred_at=now,
            data=digest_data(db=db, day=day, stall_after=stall_after, now=now))
        added += record_account_event(db=db, account=day.account.name, event_type=DIGEST,
                                      dedupe_key=day.dedupe_key, document=document,
                                      targets=targets, now=now)
    return added


def digest_data(*, db: Session, day: DigestDay, stall_after: dict[str, float],
                now: dt.datetime) -> dict[str, Any]:
    """The digest's `data` (besides `account` and `dealer_name`)."""
    account = day.account.name
    start, end = day.due_at - PERIOD, day.due_at
    mine = TrackedSession.account == account
    tracked = db.scalar(select(func.count()).select_from(TrackedSession).where(
        mine, TrackedSession.tracked_at >= start, TrackedSession.tracked_at < end)) or 0
    in_progress = db.scalar(select(func.count()).select_from(TrackedSession).where(
        mine, TrackedSession.tracking == Tracking.ACTIVE)) or 0
    outcomes = dict.fromkeys(OUTCOMES, 0)
    to_complete: list[float] = []
    for tracking, status, tracked_at, finished_at in db.execute(
            select(TrackedSession.tracking, TrackedSession.status, TrackedSession.tracked_at,
                   TrackedSession.finished_at)
            .where(mine, TrackedSession.finished_at >= start,
                   TrackedSession.finished_at < end)):
        outcome = outcome_of(tracking, status)
        outcomes[outcome] += 1
        if outcome == "completed" and finished_at is not None:
            to_complete.append((finished_at - tracked_at).total_seconds())
    ended = sum(outcomes.values())
    stalled = stalled_sessions(db=db, stall_after=stall_after, now=now, accounts=[account],
                               limit=STALLED_LISTED)
    return {
        "timezone": day.account.timezone,
        "date": day.date.isoformat(),
        "period": {"from": iso(start), "to": iso(end)},
        "tracked": tracked,
        "ended": ended,
        "outcomes": outcomes,
        "completion_rate": round(outcomes["completed"] / ended, 4) if ended else None,
        "median_time_to_complete": (round(statistics.median(to_complete))
                                    if to_complete else None),
        "in_progress": in_progress,
        "stalled_count": (len(stalled) if len(stalled) < STALLED_LISTED else
                          count_stalled(db=db, stall_after=stall_after, now=now,
                                        accounts=[account])),
        "stalled": [stalled_entry(found.tracked, stalled_for=found.stalled_for)
                    for found in stalled],
    }


def outcome_of(tracking: Tracking, status: str | None) -> str:
    """One of OUTCOMES, for a session whose tracking ended."""
    if tracking is Tracking.DONE:
        return _STATUS_OUTCOMES.get(status or "", "other")
    return tracking.value


def stalled_entry(tracked: TrackedSession, *, stalled_for: float) -> dict[str, Any]:
    """A stalled session as a digest lists it: enough to call the customer about it."""
    metadata = tracked.user_metadata if isinstance(tracked.user_metadata, dict) else {}
    options = tracked.options if isinstance(tracked.options, dict) else {}
    sms = options.get("sms")
    sms = sms if isinstance(sms, dict) else {}
    vehicle = tracked.vehicle if isinstance(tracked.vehicle, dict) else {}
    return {
        "session_key": tracked.session_key,
        "status": tracked.status,
        "status_since": iso(tracked.status_since),
        "stalled_for": round(stalled_for),
        "customer_name": metadata.get("customer_name") or sms.get("to_name"),
        "vehicle": {part: vehicle.get(part) for part in ("year", "make", "model", "vin")
                    if vehicle.get(part)} or None,
        "capture_url": tracked.redirect_url,
    }

"""Recording what one poll saw: history, inspection times, vehicle, tracking, next poll."""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any

from sqlalchemy.orm import Session

from worker.backoff import JITTER
from worker.config import Settings
from worker.delivery.events import Observed
from worker.errors import PaveError, PaveNotFound, PaveRateLimited
from worker.models import StatusChange, TrackedSession, Tracking
from worker.pave.fetching import Answer
from worker.pave.gate import is_account_error
from worker.pave.payload import SessionSnapshot
from worker.tracking.nudges import next_nudge_at
from worker.tracking.scheduling import error_backoff_delay, next_poll_delay

log = logging.getLogger(__name__)

def apply_observation(
    *,
    db: Session,
    tracked: TrackedSession,
    outcome: Answer,
    now: dt.datetime,
    settings: Settings,
    rng: random.Random,
    account_paused_until: dt.datetime | None = None,
) -> Observed:
    """Record one poll's outcome on a leased session.

    The lease is released, the poll counted, and the session either scheduled again
    or finished (`done`, `not_found`, `gave_up`). A 429 or a refused credential is the
    account's problem, not the session's: the session waits for the account's pause to
    end (`account_paused_until`) without counting an error of its own.
    """
    tracked.poll_count += 1
    tracked.last_polled_at = now
    tracked.lease_token = None
    tracked.leased_until = None
    tracked.unfinished_polls = 0

    change = None
    if isinstance(outcome, SessionSnapshot):
        change = _record_snapshot(db=db, tracked=tracked, snapshot=outcome, now=now,
                                  settings=settings, rng=rng)
    elif isinstance(outcome, PaveNotFound):
        _record_not_found(tracked=tracked, now=now, settings=settings, rng=rng)
    elif is_account_error(outcome) and account_paused_until is not None:
        tracked.last_error = outcome.describe()[:1000]
        spread = rng.uniform(0, JITTER * settings.poll_interval)
        tracked.next_poll_at = account_paused_until + dt.timedelta(seconds=spread)
    else:
        _record_error(tracked=tracked, error=outcome, now=now, settings=settings, rng=rng)

    if tracked.tracking is Tracking.ACTIVE and _too_old(tracked, now, settings):
        _finish(tracked, Tracking.GAVE_UP, now)
        log.info("%s: tracked longer than POLL_MAX_AGE, tracking ended", tracked.session_key,
                 extra=log_fields(tracked))
    log.debug("polled %s: %s", tracked.session_key,
              outcome.status if isinstance(outcome, SessionSnapshot) else outcome.describe(),
              extra={**log_fields(tracked), "tracking": tracked.tracking.value})
    ended = tracked.tracking if tracked.tracking is not Tracking.ACTIVE else None
    return Observed(change=change, ended=ended)


def log_fields(tracked: TrackedSession) -> dict[str, str]:
    """What a JSON log line says about whose session it is."""
    return {"session_key": tracked.session_key, "account": tracked.account}


def is_stale(snapshot: SessionSnapshot, tracked: TrackedSession) -> bool:
    """An answer PAVE last updated before what we already stored must change nothing."""
    return (
        snapshot.updated_at is not None
        and tracked.pave_updated_at is not None
        and snapshot.updated_at < tracked.pave_updated_at
    )


def _record_snapshot(
    *,
    db: Session,
    tracked: TrackedSession,
    snapshot: SessionSnapshot,
    now: dt.datetime,
    settings: Settings,
    rng: random.Random,
) -> StatusChange | None:
    tracked.consecutive_errors = 0
    tracked.last_error = None
    tracked.not_found_since = None
    if is_stale(snapshot, tracked):
        log.info("stale answer for %s ignored", tracked.session_key)
        _schedule(tracked, next_poll_delay(tracked.status, settings=settings, rng=rng), now)
        return None

    change = None
    if snapshot.status != tracked.status:
        change = StatusChange(
            session_id=tracked.id,
            poll_number=tracked.poll_count,
            from_status=tracked.status,
            to_status=snapshot.status,
            observed_at=now,
            pave_updated_at=snapshot.updated_at,
        )
        db.add(change)
        log.info("%s: %s -> %s", tracked.session_key, tracked.status, snapshot.status,
                 extra={**log_fields(tracked), "from": tracked.status, "to": snapshot.status})
        tracked.status = snapshot.status
        tracked.status_since = now
        # A new status: its own stall and reminders, counted from now.
        tracked.stall_announced = False
        tracked.reminders_sent = 0

    # A field PAVE leaves out (or nulls) this time keeps what an earlier answer said.
    tracked.pave_created_at = snapshot.created_at or tracked.pave_created_at
    tracked.pave_updated_at = snapshot.updated_at or tracked.pave_updated_at
    tracked.inspect_started_at = snapshot.inspect_started_at or tracked.inspect_started_at
    tracked.inspect_ended_at = snapshot.inspect_ended_at or tracked.inspect_ended_at
    tracked.vehicle = _merged(tracked.vehicle, snapshot.vehicle)
    tracked.options = snapshot.options if snapshot.options is not None else tracked.options
    tracked.redirect_url = snapshot.redirect_url or tracked.redirect_url

    if snapshot.status in settings.terminal_statuses:
        _finish(tracked, Tracking.DONE, now)
    else:
        _schedule(tracked, next_poll_delay(snapshot.status, settings=settings, rng=rng), now)
    if change is not None:
        tracked.nudge_at = next_nudge_at(tracked, settings)
    return change


def _record_not_found(
    *, tracked: TrackedSession, now: dt.datetime, settings: Settings, rng: random.Random
) -> None:
    """A just-created session can 404 for a while: give up only after the grace period."""
    tracked.not_found_since = tracked.not_found_since or now
    tracked.last_error = "not_found: PAVE does not know this session"
    if (now - tracked.not_found_since).total_seconds() >= settings.not_found_grace:
        _finish(tracked, Tracking.NOT_FOUND, now)
        log.info("%s: not found for %.0f s, tracking ended", tracked.session_key,
                 settings.not_found_grace, extra=log_fields(tracked))
    else:
        _schedule(tracked, next_poll_delay(tracked.status, settings=settings, rng=rng), now)


def _record_error(
    *,
    tracked: TrackedSession,
    error: PaveError,
    now: dt.datetime,
    settings: Settings,
    rng: random.Random,
) -> None:
    tracked.consecutive_errors += 1
    tracked.last_error = error.describe()[:1000]
    delay = error_backoff_delay(tracked.consecutive_errors, settings=settings, rng=rng)
    if isinstance(error, PaveRateLimited) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    log.warning("%s: poll failed (%s), retry in %.1f s", tracked.session_key,
                error.describe(), delay, extra=log_fields(tracked))
    _schedule(tracked, delay, now)


def _schedule(tracked: TrackedSession, delay: float, now: dt.datetime) -> None:
    tracked.next_poll_at = now + dt.timedelta(seconds=delay)


def _finish(tracked: TrackedSession, tracking: Tracking, now: dt.datetime) -> None:
    tracked.tracking = tracking
    tracked.finished_at = now
    tracked.next_poll_at = None
    tracked.nudge_at = None  # a session that ended is nudged no more


def _too_old(tracked: TrackedSession, now: dt.datetime, settings: Settings) -> bool:
    return (now - tracked.tracked_at).total_seconds() >= settings.poll_max_age


def _merged(
    stored: dict[str, Any] | None, seen: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A partial vehicle (VIN only) never erases a fuller one seen before."""
    if not seen:
        return stored
    return {**(stored or {}), **seen}

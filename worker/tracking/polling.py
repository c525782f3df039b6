"""Poll work: the beat tick's dispatch, and polling one leased batch.

Plain functions: they know nothing of Celery. `worker.tasks` wraps them.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.config import Settings
from worker.db import utcnow
from worker.delivery.events import Observed
from worker.delivery.outbox import record_events
from worker.delivery.targets import Target
from worker.errors import PaveAuthError, PaveError, PaveRateLimited
from worker.models import Tracking
from worker.pave.fetching import Outcome, is_account_error
from worker.pave.payload import SessionSnapshot
from worker.tracking.account import account_paused_until, pause_account
from worker.tracking.leasing import (
    claim_leased_sessions,
    due_backlog,
    lease_due_sessions,
    load_claimed_sessions,
    sessions_that_kill_their_worker,
)
from worker.tracking.observations import apply_observation

log = logging.getLogger(__name__)

Fetch = Callable[[Sequence[str]], Mapping[str, Outcome]]
Enqueue = Callable[[list[int], str], None]


@dataclass(frozen=True)
class PollReport:
    claimed: int
    recorded: int
    changes: int
    deliveries: int = 0


def dispatch_due_polls(
    *, sessions: sessionmaker[Session], settings: Settings, enqueue: Enqueue,
    targets: Sequence[Target] = (),
) -> int:
    """Lease what is due and hand it out in batches; returns how many were leased.

    Safe to run twice at once (two beats): each run leases different rows. If the
    broker loses the messages, the leases expire and a later tick hands them out again.
    """
    with sessions.begin() as db:
        now = utcnow()
        if account_paused_until(db=db, now=now) is not None:
            return 0  # PAVE throttled us or refused the credentials: wait for everyone
        give_up_on_sessions_that_kill_their_worker(db=db, now=now, settings=settings,
                                                   targets=targets)
        token, ids = lease_due_sessions(
            db=db, now=now, limit=settings.dispatch_max, lease_seconds=settings.lease_seconds,
        )
        due, oldest = due_backlog(db=db, now=now)
    metrics.DUE_SESSIONS.set(due)
    metrics.OLDEST_DUE.set((now - oldest).total_seconds() if oldest else 0)
    size = settings.poll_batch_size
    for start in range(0, len(ids), size):
        enqueue(ids[start : start + size], token)
    return len(ids)


def give_up_on_sessions_that_kill_their_worker(
    *, db: Session, now: dt.datetime, settings: Settings, targets: Sequence[Target]
) -> None:
    """A poll that never finishes (OOM, a crash, a hang) would otherwise be retried at
    every lease expiry forever: past MAX_UNFINISHED_POLLS, tracking ends `gave_up`."""
    for tracked in sessions_that_kill_their_worker(db=db, now=now,
                                                   limit=settings.max_unfinished_polls):
        tracked.tracking = Tracking.GAVE_UP
        tracked.finished_at = now
        tracked.next_poll_at = tracked.lease_token = tracked.leased_until = None
        tracked.last_error = (f"gave up: {tracked.unfinished_polls + 1} polls in a row never "
                              "finished (the worker died or hung while polling)")
        log.error("%s: %s", tracked.session_key, tracked.last_error)
        record_events(db=db, tracked=tracked, observed=Observed(ended=Tracking.GAVE_UP),
                      targets=targets, now=now)


def poll_leased_sessions(
    *,
    ids: Sequence[int],
    lease_token: str,
    sessions: sessionmaker[Session],
    settings: Settings,
    fetch: Fetch,
    targets: Sequence[Target] = (),
    rng: random.Random | None = None,
) -> PollReport:
    """Claim a leased batch, ask PAVE about each session, record every outcome.

    The events an outcome calls for go into the outbox in the same transaction.
    """
    rng = rng or random.Random()
    with sessions.begin() as db:
        claim, claimed = claim_leased_sessions(db=db, ids=ids, lease_token=lease_token)
    if not claimed:
        return PollReport(claimed=0, recorded=0, changes=0)

    outcomes = fetch([key for _, key in claimed])

    changes = deliveries = 0
    with sessions.begin() as db:
        tracked_sessions = load_claimed_sessions(
            db=db, ids=[row_id for row_id, _ in claimed], claim=claim
        )
        now = utcnow()
        paused_until = pause_for_account_errors(db=db, outcomes=outcomes.values(), now=now,
                                                settings=settings)
        for tracked in tracked_sessions:
            outcome = outcomes[tracked.session_key]
            observed = apply_observation(db=db, tracked=tracked, outcome=outcome, now=now,
                                         settings=settings, rng=rng,
                                         account_paused_until=paused_until)
            if observed.change is not None:
                changes += 1
                metrics.TRANSITIONS.labels(observed.change.to_status).inc()
            deliveries += record_events(
                db=db, tracked=tracked, observed=observed, targets=targets, now=now,
                results=outcome.results if isinstance(outcome, SessionSnapshot) else None,
            )
    return PollReport(claimed=len(claimed), recorded=len(tracked_sessions), changes=changes,
                      deliveries=deliveries)


def pause_for_account_errors(
    *, db: Session, outcomes: Iterable[Outcome], now: dt.datetime, settings: Settings
) -> dt.datetime | None:
    """Pause the whole account if PAVE throttled us or refused the credentials."""
    account_errors = [outcome for outcome in outcomes if isinstance(outcome, PaveError)
                      and is_account_error(outcome)]
    if not account_errors:
        return None
    if any(isinstance(error, PaveAuthError) for error in account_errors):
        log.error("PAVE refused the credentials: polling paused for %.0f s for the whole "
                  "account. Check PAVE_API_KEY and PAVE_USERNAME/PAVE_API_SECRET or "
                  "PAVE_API_TOKEN (`pave-tracker check`).", settings.auth_pause)
        return pause_account(db=db, until=now + dt.timedelta(seconds=settings.auth_pause),
                             reason="PAVE refused the credentials")
    waits = [error.retry_after for error in account_errors
             if isinstance(error, PaveRateLimited) and error.retry_after is not None]
    pause = max(waits) if waits else settings.rate_limit_pause
    log.warning("PAVE answered 429: polling paused for %.1f s for the whole account", pause)
    return pause_account(db=db, until=now + dt.timedelta(seconds=pause),
                         reason="PAVE asked to slow down (429)")

"""Poll work: the beat tick's dispatch, and polling one leased batch.

Plain functions: they know nothing of Celery. `worker.tasks` wraps them. Each takes its
clock, so tests move time instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.backoff import JITTER
from worker.config import Settings
from worker.db import utcnow
from worker.delivery.events import Observed
from worker.delivery.outbox import record_events
from worker.delivery.targets import Target
from worker.errors import AccountNotConfigured, PaveAuthError, PaveError
from worker.models import TrackedSession, Tracking
from worker.pave.fetching import NotAsked, Outcome
from worker.pave.gate import is_account_error, pause_seconds
from worker.pave.payload import SessionSnapshot
from worker.tracking.account import account_paused_until, pause_account, paused_accounts
from worker.tracking.backpressure import (
    QueueReading,
    lease_allowance,
    load_dispatch_state,
    note_tick,
    too_soon,
)
from worker.tracking.leasing import (
    claim_leased_sessions,
    defer_paused_sessions,
    due_backlog,
    lease_due_sessions,
    load_claimed_sessions,
    release_paused_accounts,
    release_unasked_session,
    sessions_that_kill_their_worker,
)
from worker.tracking.observations import apply_observation

log = logging.getLogger(__name__)

# {account: keys} → each key's outcome: a batch's accounts are asked side by side, each
# with its own credentials, gate and rate limit.
Fetch = Callable[[Mapping[str, Sequence[str]]], Mapping[str, Outcome]]
Enqueue = Callable[[list[int], str], None]
Clock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class PollReport:
    claimed: int
    recorded: int
    changes: int
    deliveries: int = 0
    released: int = 0


def dispatch_due_polls(
    *, sessions: sessionmaker[Session], settings: Settings, enqueue: Enqueue,
    targets: Sequence[Target] = (), waiting: Callable[[], int | None] = lambda: None,
    dealer_names: Mapping[str, str | None] | None = None, clock: Clock = utcnow,
) -> int:
    """Lease what is due and hand it out in batches; returns how many were leased. A
    paused account's sessions are left where they are.

    Safe to run twice at once (two beats): each run leases different rows. If the
    broker loses the messages, the leases expire and a later tick hands them out again.
    `waiting` tells how many messages wait in the broker: a tick leases no more than
    the workers take (`worker.tracking.backpressure`).
    """
    reading = QueueReading(waiting=waiting(), at=clock())
    size = settings.poll_batch_size
    with sessions.begin() as db:
        now = reading.at
        state = load_dispatch_state(db)
        if too_soon(reading=reading, previous=state, min_gap=settings.dispatch_interval / 2):
            return 0  # ticks bunched up behind a backlog: the first of them did the work
        give_up_on_sessions_that_kill_their_worker(db=db, now=now, settings=settings,
                                                   targets=targets,
                                                   dealer_names=dealer_names or {})
        allowance = lease_allowance(
            reading=reading, previous=state, batch_size=size,
            dispatch_max=settings.dispatch_max,
            target_wait=min(settings.dispatch_interval, settings.lease_seconds / 2))
        # PAVE throttled these accounts or refused their credentials: they wait, the
        # others go on.
        paused = paused_accounts(db=db, now=now)
        defer_paused_sessions(db=db, paused=paused, now=now, limit=settings.dispatch_max)
        token, leased = lease_due_sessions(db=db, now=now, limit=allowance,
                                           lease_seconds=settings.lease_seconds,
                                           skip_accounts=sorted(paused))
        batches = batches_of(leased, size=size)
        note_tick(state, reading=reading, messages_sent=len(batches))
        due, oldest = due_backlog(db=db, now=now)
    metrics.DUE_SESSIONS.set(due)
    metrics.OLDEST_DUE.set((now - oldest).total_seconds() if oldest else 0)
    for batch in batches:
        enqueue(batch, token)
    return len(leased)


def batches_of(leased: Sequence[tuple[int, str]], *, size: int) -> list[list[int]]:
    """Batches of at most `size` ids in the leased order (oldest due first), accounts
    mixed: a batch asks its accounts side by side, each with its own credentials and
    pause. One account per batch was measured against it (scripts/accounts_batching.py):
    a dealer group with few sessions due per account and tick made many small batches,
    ~7 times the database time per poll."""
    ids = [row_id for row_id, _ in leased]
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def give_up_on_sessions_that_kill_their_worker(
    *, db: Session, now: dt.datetime, settings: Settings, targets: Sequence[Target],
    dealer_names: Mapping[str, str | None],
) -> None:
    """A poll that never finishes (OOM, a crash, a hang) would otherwise be retried at
    every lease expiry forever: past MAX_UNFINISHED_POLLS, tracking ends `gave_up`."""
    for tracked in sessions_that_kill_their_worker(db=db, now=now,
                                                   limit=settings.max_unfinished_polls):
        tracked.tracking = Tracking.GAVE_UP
        tracked.finished_at = now
        tracked.next_poll_at = tracked.lease_token = tracked.leased_until = None
        tracked.last_error = (f"gave up: {tracked.unfinished_polls} polls in a row never "
                              "finished (the worker died or hung while polling)")
        log.error("%s: %s", tracked.session_key, tracked.last_error,
                  extra={"session_key": tracked.session_key, "account": tracked.account})
        record_events(db=db, tracked=tracked, observed=Observed(ended=Tracking.GAVE_UP),
                      targets=targets, now=now,
                      dealer_name=dealer_names.get(tracked.account))


def poll_leased_sessions(
    *,
    ids: Sequence[int],
    lease_token: str,
    sessions: sessionmaker[Session],
    settings: Settings,
    fetch: Fetch,
    targets: Sequence[Target] = (),
    dealer_names: Mapping[str, str | None] | None = None,
    rng: random.Random | None = None,
    clock: Clock = utcnow,
) -> PollReport:
    """Claim a leased batch, ask PAVE about each session, record every outcome.

    The sessions of a paused account are neither claimed nor asked: they go back, due
    when its pause ends. Each account is asked with its own credentials. The events an
    outcome calls for go into the outbox in the same transaction that records it.
    """
    rng = rng or random.Random()
    dealer_names = dealer_names or {}
    with sessions.begin() as db:
        claimed_at = clock()
        released_paused = release_paused_accounts(
            db=db, ids=ids, lease_token=lease_token,
            paused=paused_accounts(db=db, now=claimed_at))
        claim, claimed = claim_leased_sessions(db=db, ids=ids, lease_token=lease_token,
                                               now=claimed_at,
                                               lease_seconds=settings.lease_seconds)
    if not claimed:
        return PollReport(claimed=0, recorded=0, changes=0, released=released_paused)

    keys_by_account: dict[str, list[str]] = {}
    for _, key, account in claimed:
        keys_by_account.setdefault(account, []).append(key)
    for keys in keys_by_account.values():
        # In no set order: a batch that runs out of time leaves out whoever came last,
        # and that must not be the same sessions batch after batch.
        rng.shuffle(keys)
    outcomes = fetch(keys_by_account)

    changes = deliveries = released = 0
    with sessions.begin() as db:
        tracked_sessions = load_claimed_sessions(
            db=db, ids=[row_id for row_id, _, _ in claimed], claim=claim
        )
        now = clock()
        pauses = pauses_after_answers(db=db, keys_by_account=keys_by_account,
                                      outcomes=outcomes, now=now, settings=settings)
        for tracked in tracked_sessions:
            outcome = outcomes[tracked.session_key]
            paused_until = pauses[tracked.account]
            if isinstance(outcome, NotAsked):
                release_unasked_session(tracked, due_at=_due_again(
                    tracked, outcome, paused_until=paused_until, now=now, settings=settings,
                    rng=rng))
                released += 1
                continue
            observed = apply_observation(db=db, tracked=tracked, outcome=outcome, now=now,
                                         settings=settings, rng=rng,
                                         account_paused_until=paused_until)
            if observed.change is not None:
                changes += 1
                metrics.TRANSITIONS.labels(tracked.account, observed.change.to_status).inc()
            deliveries += record_events(
                db=db, tracked=tracked, observed=observed, targets=targets, now=now,
                results=outcome.results if isinstance(outcome, SessionSnapshot) else None,
                dealer_name=dealer_names.get(tracked.account),
            )
    return PollReport(claimed=len(claimed), recorded=len(tracked_sessions) - released,
                      changes=changes, deliveries=deliveries,
                      released=released + released_paused)


def _due_again(tracked: TrackedSession, outcome: NotAsked, *,
               paused_until: dt.datetime | None, now: dt.datetime, settings: Settings,
               rng: random.Random) -> dt.datetime:
    """When a session given back unasked falls due.

    While the account is paused (in the database, or only in this process's gate so
    far), when the pause ends, spread a little so the sessions of one pause do not all
    come back at once. Otherwise as of its last poll (or its tracking): leasing moved
    its due time to the lease's end, and a session that lost its turn must not lose its
    place in line too. Its last poll is the earliest it can have fallen due, so it goes
    ahead of every session due since: it has lost a turn already.
    """
    if outcome.paused_for is not None:
        gate_opens = now + dt.timedelta(seconds=outcome.paused_for)
        paused_until = max(paused_until or gate_opens, gate_opens)
    if paused_until is None:
        return tracked.last_polled_at or tracked.tracked_at
    return paused_until + dt.timedelta(seconds=rng.uniform(0, JITTER * settings.poll_interval))


def pauses_after_answers(
    *, db: Session, keys_by_account: Mapping[str, Sequence[str]],
    outcomes: Mapping[str, Outcome], now: dt.datetime, settings: Settings,
) -> dict[str, dt.datetime | None]:
    """Each account's pause after this batch's answers: the one its errors call for,
    else (if keys came back unasked) another process's. Accounts in name order, so two
    batches lock the pause rows in the same order and never deadlock."""
    pauses: dict[str, dt.datetime | None] = {}
    for account in sorted(keys_by_account):
        answers = [outcomes[key] for key in keys_by_account[account]]
        until = pause_for_account_errors(db=db, account=account, outcomes=answers, now=now,
                                         settings=settings)
        if until is None and any(isinstance(answer, NotAsked) for answer in answers):
            until = account_paused_until(db=db, account=account, now=now)
        pauses[account] = until
    return pauses


def pause_for_account_errors(
    *, db: Session, account: str, outcomes: Iterable[Outcome], now: dt.datetime,
    settings: Settings,
) -> dt.datetime | None:
    """Pause the account if PAVE throttled it or refused its credentials."""
    account_errors = [outcome for outcome in outcomes if isinstance(outcome, PaveError)
                      and is_account_error(outcome)]
    if not account_errors:
        return None
    seconds = pause_seconds(account_errors, auth_pause=settings.auth_pause,
                            rate_limit_pause=settings.rate_limit_pause)
    if any(isinstance(error, AccountNotConfigured) for error in account_errors):
        log.error("account %s is not in the settings, so its sessions cannot be polled: "
                  "they wait %.0f s at a time. Add the account back, or untrack them.",
                  account, seconds, extra={"account": account})
        reason = "the account is not in the settings"
    elif any(isinstance(error, PaveAuthError) for error in account_errors):
        log.error("PAVE refused the credentials of account %s: its polling paused for "
                  "%.0f s. Check its API key and username/secret or token "
                  "(`pave-tracker check`).", account, seconds,
                  extra={"account": account})
        reason = "PAVE refused the credentials"
    else:
        log.warning("PAVE answered 429 to account %s: its polling paused for %.1f s",
                    account, seconds, extra={"account": account})
        reason = "PAVE asked to slow down (429)"
    return pause_account(db=db, account=account, until=now + dt.timedelta(seconds=seconds),
                         reason=reason)

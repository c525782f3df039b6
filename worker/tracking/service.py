"""Tracking and untracking sessions, and reading them back. The caller owns the transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.accounts import DEFAULT_ACCOUNT
from worker.db import insert_ignoring_duplicates
from worker.errors import AccountConflict, BadInput
from worker.models import StatusChange, TrackedSession, Tracking
from worker.tracking.requests import TrackRequest, merge_requests

CHUNK = 500
# Tracking one of these again starts polling again; `done` has nothing more to learn.
RESTARTABLE = {Tracking.STOPPED, Tracking.NOT_FOUND, Tracking.GAVE_UP}


@dataclass(frozen=True)
class TrackSummary:
    added: int = 0
    restarted: int = 0
    updated: int = 0
    unchanged: int = 0


def track_sessions(
    *, db: Session, requests: Sequence[TrackRequest], now: dt.datetime,
    progress: Callable[[int], None] | None = None,
) -> TrackSummary:
    """Start tracking each key; idempotent.

    A new key is polled at once. A known key merges the new metadata into its own and,
    if its tracking ended other than `done`, starts again as if tracked now; a key
    tracked under another account is refused (`AccountConflict`) and nothing is written
    by the caller's transaction. `progress` is told how many keys each chunk handled.
    """
    added = restarted = updated = unchanged = 0
    merged = merge_requests(requests)
    for start in range(0, len(merged), CHUNK):
        chunk = merged[start : start + CHUNK]
        existing = {
            tracked.session_key: tracked
            for tracked in db.scalars(
                select(TrackedSession).where(
                    TrackedSession.session_key.in_([r.session_key for r in chunk])
                )
            )
        }
        for request in chunk:
            tracked = existing.get(request.session_key)
            if tracked is not None and tracked.account != _account_of(request):
                raise AccountConflict(f"{request.session_key} is already tracked under "
                                      "another account")
        new_rows = [
            _new_row(request, now) for request in chunk if request.session_key not in existing
        ]
        if new_rows:
            # ON CONFLICT DO NOTHING: a concurrent `track` of the same key is not an error.
            inserted = db.scalars(
                insert_ignoring_duplicates(db, TrackedSession, unique=["session_key"])
                .returning(TrackedSession.id),
                new_rows,
            )
            added += len(inserted.all())
            # A key another account's `track` inserted a moment ago was skipped by ON
            # CONFLICT DO NOTHING: it is that account's, so this request is refused.
            _check_owners(db, {row["session_key"]: row["account"] for row in new_rows})
        for request in chunk:
            tracked = existing.get(request.session_key)
            if tracked is None:
                continue
            changed = False
            if request.metadata and {**tracked.user_metadata, **request.metadata} != \
                    tracked.user_metadata:
                tracked.user_metadata = {**tracked.user_metadata, **request.metadata}
                changed = True
            if tracked.tracking in RESTARTABLE:
                _restart(tracked, now)
                restarted += 1
            elif changed:
                updated += 1
            else:
                unchanged += 1
        if progress is not None:
            progress(len(chunk))
    return TrackSummary(added=added, restarted=restarted, updated=updated, unchanged=unchanged)


def untrack_sessions(*, db: Session, keys: Sequence[str], now: dt.datetime) -> int:
    """Stop polling these keys; every key must be tracked. Returns how many were active.

    The rows are locked as they are read: a poll recording `done` meanwhile is waited
    for and seen, never overwritten with `stopped`.
    """
    found = {
        tracked.session_key: tracked
        for tracked in db.scalars(
            select(TrackedSession).where(TrackedSession.session_key.in_(list(keys)))
            .order_by(TrackedSession.id)  # one lock order for every caller: no deadlock
            .with_for_update()
        )
    }
    missing = [key for key in dict.fromkeys(keys) if key not in found]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        raise BadInput(f"not tracked: {shown}")
    stopped = 0
    for tracked in found.values():
        if tracked.tracking is Tracking.ACTIVE:
            tracked.tracking = Tracking.STOPPED
            tracked.finished_at = now
            tracked.next_poll_at = None
            tracked.nudge_at = None  # untracking stops reminders
            # Dropping the lease makes an in-flight poll's result count for nothing.
            tracked.lease_token = None
            tracked.leased_until = None
            stopped += 1
    return stopped


def find_session(*, db: Session, session_key: str) -> TrackedSession:
    tracked = db.scalar(select(TrackedSession).where(TrackedSession.session_key == session_key))
    if tracked is None:
        raise BadInput(f"not tracked: {session_key}")
    return tracked


def session_history(*, db: Session, session_id: int) -> list[StatusChange]:
    return list(
        db.scalars(
            select(StatusChange).where(StatusChange.session_id == session_id)
            .order_by(StatusChange.poll_number)
        )
    )


def list_sessions(
    *,
    db: Session,
    tracking: Tracking | None = None,
    status: str | None = None,
    accounts: Sequence[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[TrackedSession]:
    """Sessions in id order; `accounts` keeps those accounts' only."""
    query = select(TrackedSession).order_by(TrackedSession.id).offset(offset)
    if accounts is not None:
        query = query.where(TrackedSession.account.in_(list(accounts)))
    if tracking is not None:
        query = query.where(TrackedSession.tracking == tracking)
    if status is not None:
        query = query.where(TrackedSession.status == status)
    if limit is not None:
        query = query.limit(limit)
    return list(db.scalars(query))


def _check_owners(db: Session, owner_of: dict[str, str]) -> None:
    for key, account in db.execute(select(TrackedSession.session_key, TrackedSession.account)
                                   .where(TrackedSession.session_key.in_(list(owner_of)))):
        if account != owner_of[key]:
            raise AccountConflict(f"{key} is already tracked under another account")


def _account_of(request: TrackRequest) -> str:
    return request.account or DEFAULT_ACCOUNT


def _new_row(request: TrackRequest, now: dt.datetime) -> dict[str, Any]:
    return {
        "session_key": request.session_key,
        "account": _account_of(request),
        "tracking": Tracking.ACTIVE,
        "user_metadata": request.metadata,
        "poll_count": 0,
        "consecutive_errors": 0,
        "tracked_at": now,
        "next_poll_at": now,
    }


def _restart(tracked: TrackedSession, now: dt.datetime) -> None:
    tracked.tracking = Tracking.ACTIVE
    tracked.tracked_at = now
    tracked.finished_at = None
    tracked.next_poll_at = now
    tracked.nudge_at = None  # nudged again from its next status change
    tracked.not_found_since = None
    tracked.consecutive_errors = 0
    # A fresh start: nothing of the old tracking's leases or dead polls counts against it.
    tracked.unfinished_polls = 0
    tracked.lease_token = None
    tracked.leased_until = None

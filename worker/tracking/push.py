"""PAVE's push notifications as a fast path: never truth, only "poll this one now"."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.models import TrackedSession, Tracking
from worker.tracking.account import account_paused_until
from worker.tracking.leasing import lease_loaded_session
from worker.tracking.requests import TrackRequest
from worker.tracking.service import track_sessions


class PushOutcome(enum.StrEnum):
    POLLING = "polling"  # leased now: a poll starts at once
    IN_FLIGHT = "in_flight"  # another poll holds the lease; it will see the news
    PAUSED = "paused"  # the PAVE account is paused: due the moment the pause ends
    FINISHED = "finished"  # tracking has ended; nothing to do
    NOT_TRACKED = "not_tracked"  # unknown key and PUSH_AUTOTRACK is off


def lease_for_push(
    *, db: Session, account: str, session_key: str, now: dt.datetime, lease_seconds: float,
    autotrack: bool,
) -> tuple[PushOutcome, tuple[int, str] | None]:
    """Make the session due now by leasing it at once; returns what to poll, if anything.

    A push speaks for one account (its token says which): a key tracked under another
    account is, to it, not tracked, and is neither polled nor taken over. The push body
    is never recorded: the poll it starts asks PAVE's GET for the truth. While the
    account is paused a push asks PAVE nothing either; the session falls due as the
    pause ends instead of waiting for its next scheduled poll.
    """
    tracked = db.scalar(select(TrackedSession)
                        .where(TrackedSession.session_key == session_key).with_for_update())
    if tracked is not None and tracked.account != account:
        return PushOutcome.NOT_TRACKED, None
    if tracked is None:
        if not autotrack:
            return PushOutcome.NOT_TRACKED, None
        track_sessions(db=db, requests=[TrackRequest(session_key, {"source": "pave-push"},
                                                     account=account)], now=now)
        tracked = db.scalars(select(TrackedSession)
                             .where(TrackedSession.session_key == session_key)).one()
    if tracked.tracking is not Tracking.ACTIVE:
        return PushOutcome.FINISHED, None
    if tracked.lease_token is not None and tracked.leased_until and tracked.leased_until > now:
        return PushOutcome.IN_FLIGHT, None
    paused_until = account_paused_until(db=db, account=account, now=now)
    if paused_until is not None:
        if tracked.next_poll_at is None or tracked.next_poll_at > paused_until:
            tracked.next_poll_at = paused_until
        return PushOutcome.PAUSED, None
    token = lease_loaded_session(tracked, now=now, lease_seconds=lease_seconds)
    return PushOutcome.POLLING, (tracked.id, token)

"""Small builders shared by the tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.db import utcnow
from worker.delivery.targets import Target
from worker.models import TrackedSession, Tracking
from worker.tracking.polling import dispatch_due_polls
from worker.tracking.requests import TrackRequest
from worker.tracking.service import track_sessions


def track(sessions: sessionmaker[Session], *keys: str, now: dt.datetime | None = None) -> None:
    with sessions.begin() as db:
        track_sessions(db=db, requests=[TrackRequest(key) for key in keys],
                       now=now or utcnow())


def add_session(db: Session, key: str, **fields: Any) -> TrackedSession:
    now = utcnow()
    values: dict[str, Any] = {"session_key": key, "tracking": Tracking.ACTIVE,
                              "user_metadata": {}, "poll_count": 0, "consecutive_errors": 0,
                              "tracked_at": now, "next_poll_at": now, **fields}
    tracked = TrackedSession(**values)
    db.add(tracked)
    db.flush()
    return tracked


def all_keys(keys_by_account: Mapping[str, Sequence[str]]) -> list[str]:
    """Every key a poll batch asks about, whatever its account (a fake `fetch`'s input)."""
    return [key for keys in keys_by_account.values() for key in keys]


class Clock:
    """A clock the test moves: pass `clock` where the code takes one, then `advance`."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


def tick(sessions: sessionmaker[Session], settings: Settings, clock: Clock,
         targets: Sequence[Target] = ()) -> list[tuple[list[int], str]]:
    """One beat tick at `clock`'s time; returns the poll messages it sent (ids, token)."""
    sent: list[tuple[list[int], str]] = []
    dispatch_due_polls(sessions=sessions, settings=settings, clock=clock, targets=targets,
                       enqueue=lambda ids, token: sent.append((ids, token)))
    return sent

"""The outbox on SQLite and PostgreSQL: events once, leases, the retry schedule, replay."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import add_session
from tests.receivers import SECRET
from worker.db import utcnow
from worker.delivery.attempts import AttemptResult
from worker.delivery.events import Observed
from worker.delivery.outbox import (
    lease_due_deliveries,
    record_attempt,
    record_events,
    replay_deliveries,
)
from worker.delivery.targets import HookTarget, Target, WebhookTarget
from worker.errors import BadInput
from worker.models import Delivery, DeliveryState, Event, StatusChange, TrackedSession, Tracking

HOOK = HookTarget(name="hook", callable="x:y",
                  events=["session.status_changed", "session.completed", "tracking.not_found"])
WEBHOOK = WebhookTarget(name="webhook", url="https://x.example/hook",  # type: ignore[arg-type]
                        secrets=[SECRET])  # type: ignore[list-item]
SCHEDULE = (5.0, 60.0)


def complete(sessions: sessionmaker[Session], targets: list[Target], *, times: int = 1,
             key: str = "ABC-1") -> int:
    """Record IDLE -> COMPLETE for a session, writing its events `times` times."""
    added = 0
    with sessions.begin() as db:
        tracked = db.scalar(select(TrackedSession).where(TrackedSession.session_key == key))
        if tracked is None:
            tracked = add_session(db, key, status="IDLE",
                                  vehicle={"vin": "5N1", "make": "Nissan"},
                                  user_metadata={"email": "a@b.co"})
        tracked.status = "COMPLETE"
        tracked.tracking = Tracking.DONE
        change = StatusChange(session_id=tracked.id, poll_number=2, from_status="IDLE",
                              to_status="COMPLETE", observed_at=utcnow())
        db.add(change)
        for _ in range(times):
            added += record_events(db=db, tracked=tracked, observed=Observed(change=change),
                                   targets=targets, now=utcnow())
    return added


def bodies(sessions: sessionmaker[Session]) -> dict[str, dict[str, object]]:
    with sessions() as db:
        return {event.type: json.loads(event.body) for event in db.scalars(select(Event))}


def test_events_follow_the_observation_and_the_subscriptions(
    sessions: sessionmaker[Session]
) -> None:
    assert complete(sessions, [HOOK, WEBHOOK]) == 3  # hook: 2 events, webhook: 1
    documents = bodies(sessions)
    assert set(documents) == {"session.status_changed", "session.completed"}
    completed = documents["session.completed"]
    assert completed["type"] == "session.completed"
    data = completed["data"]
    assert isinstance(data, dict)
    assert data["session_key"] == "ABC-1" and data["status"] == "COMPLETE"
    assert data["previous_status"] == "IDLE" and data["metadata"] == {"email": "a@b.co"}
    assert data["vehicle"] == {"vin": "5N1", "make": "Nissan"}
    assert [step["to"] for step in data["history"]] == ["COMPLETE"]  # type: ignore[index]


def test_recording_twice_adds_nothing(sessions: sessionmaker[Session]) -> None:
    assert complete(sessions, [WEBHOOK], times=3) == 1
    with sessions() as db:
        assert db.scalar(select(func.count()).select_from(Delivery)) == 1


def test_no_subscribed_target_writes_no_event(sessions: sessionmaker[Session]) -> None:
    only_expired = HookTarget(name="h", callable="x:y", events=["session.expired"])
    assert complete(sessions, [only_expired]) == 0
    assert bodies(sessions) == {}


def test_tracking_events(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as db:
        tracked = add_session(db, "ABC-1", tracking=Tracking.NOT_FOUND)
        added = record_events(db=db, tracked=tracked,
                              observed=Observed(ended=Tracking.NOT_FOUND),
                              targets=[HOOK], now=utcnow())
    assert added == 1 and set(bodies(sessions)) == {"tracking.not_found"}


def lease(sessions: sessionmaker[Session], now: dt.datetime | None = None,
          limit: int = 10) -> tuple[str, list[str]]:
    with sessions.begin() as db:
        token, leased = lease_due_deliveries(db=db, now=now or utcnow(), limit=limit,
                                             lease_seconds=30, max_unfinished_attempts=5)
    return token, [delivery.id for delivery in leased]


def attempt(sessions: sessionmaker[Session], delivery_id: str, token: str,
            result: AttemptResult, now: dt.datetime | None = None) -> Delivery | None:
    with sessions.begin() as db:
        return record_attempt(db=db, delivery_id=delivery_id, lease_token=token,
                              result=result, now=now or utcnow(), retry_schedule=SCHEDULE,
                              rng=random.Random(0))


FAILED = AttemptResult(delivered=False, duration_ms=3, status_code=500, error="HTTP 500")


def test_retry_schedule_then_dead(sessions: sessionmaker[Session]) -> None:
    complete(sessions, [WEBHOOK])
    t0 = utcnow()
    token, (delivery_id,) = lease(sessions, t0)
    assert lease(sessions, t0)[1] == []  # leased: not handed out twice
    first = attempt(sessions, delivery_id, token, FAILED, t0)
    assert first is not None and first.state is DeliveryState.RETRYING
    assert first.next_attempt_at is not None
    assert 4.5 <= (first.next_attempt_at - t0).total_seconds() <= 5.5
    token, ids = lease(sessions, t0 + dt.timedelta(seconds=6))
    second = attempt(sessions, delivery_id, token, FAILED, t0 + dt.timedelta(seconds=6))
    assert second is not None and second.next_attempt_at is not None
    assert 54 <= (second.next_attempt_at - t0).total_seconds() - 6 <= 66
    token, ids = lease(sessions, t0 + dt.timedelta(seconds=100))
    third = attempt(sessions, delivery_id, token, FAILED, t0 + dt.timedelta(seconds=100))
    assert third is not None and third.state is DeliveryState.DEAD
    assert third.attempts == 3 and third.next_attempt_at is None
    assert lease(sessions, t0 + dt.timedelta(days=9))[1] == []


def test_success_gone_and_retry_after(sessions: sessionmaker[Session]) -> None:
    complete(sessions, [WEBHOOK], key="ABC-1")
    complete(sessions, [WEBHOOK], key="ABC-2")
    complete(sessions, [WEBHOOK], key="ABC-3")
    token, ids = lease(sessions)
    now = utcnow()
    ok = attempt(sessions, ids[0], token, AttemptResult(delivered=True, duration_ms=1,
                                                        status_code=204), now)
    gone = attempt(sessions, ids[1], token, AttemptResult(delivered=False, duration_ms=1,
                                                          status_code=410, permanent=True))
    slow = attempt(sessions, ids[2], token, AttemptResult(delivered=False, duration_ms=1,
                                                          status_code=429, retry_after=900),
                   now)
    assert ok is not None and ok.state is DeliveryState.DELIVERED and ok.delivered_at == now
    assert gone is not None and gone.state is DeliveryState.DEAD and gone.attempts == 1
    assert slow is not None and slow.next_attempt_at is not None
    assert (slow.next_attempt_at - now).total_seconds() >= 900


def test_an_attempt_after_the_lease_was_lost_is_not_recorded(
    sessions: sessionmaker[Session]
) -> None:
    complete(sessions, [WEBHOOK])
    token, (delivery_id,) = lease(sessions)
    lease(sessions, utcnow() + dt.timedelta(seconds=31))  # expired and taken over
    assert attempt(sessions, delivery_id, token, FAILED) is None


def test_replay(sessions: sessionmaker[Session]) -> None:
    complete(sessions, [WEBHOOK])
    token, (delivery_id,) = lease(sessions)
    attempt(sessions, delivery_id, token, AttemptResult(delivered=False, duration_ms=1,
                                                        permanent=True))
    with sessions.begin() as db:
        assert replay_deliveries(db=db, ids=[], all_dead=True, now=utcnow()) == 1
    token, ids = lease(sessions)
    assert ids == [delivery_id]  # the same id: receivers deduplicate on it
    with pytest.raises(BadInput, match="no such delivery"):
        with sessions.begin() as db:
            replay_deliveries(db=db, ids=["msg_" + "0" * 32], all_dead=False, now=utcnow())


def test_two_drains_at_once_never_lease_a_delivery_twice(
    sessions: sessionmaker[Session]
) -> None:
    for number in range(60):
        complete(sessions, [WEBHOOK], key=f"KEY-{number:03d}")
    leased: list[list[str]] = []
    barrier = threading.Barrier(3)

    def drain() -> None:
        barrier.wait()
        mine: list[str] = []
        while ids := lease(sessions, limit=5)[1]:
            mine += ids
        leased.append(mine)

    threads = [threading.Thread(target=drain) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = [delivery for mine in leased for delivery in mine]
    assert len(everything) == 60 == len(set(everything))

"""A delivery whose attempts never finish (the worker dies each time) cannot loop forever.

A "dead worker" here is a lease taken with `lease_due_deliveries` and never recorded,
exactly what a drain killed mid-delivery leaves behind. Time moves by the injected
clock, never by sleeping.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.test_outbox import complete
from worker.config import Settings
from worker.db import utcnow
from worker.delivery.draining import DrainReport, drain_outbox
from worker.delivery.outbox import lease_due_deliveries, replay_deliveries
from worker.delivery.targets import HookTarget, Target
from worker.models import Delivery, DeliveryState

HOOK_CALLS: list[dict[str, Any]] = []
LEASE = dt.timedelta(seconds=30)


def record_hook(event: dict[str, Any]) -> None:
    HOOK_CALLS.append(event)


def failing_hook(event: dict[str, Any]) -> None:
    raise RuntimeError("the DMS is down")


RECORDS: list[Target] = [
    HookTarget(name="hook", callable="tests.test_delivery_unfinished_attempts:record_hook")]
FAILS: list[Target] = [
    HookTarget(name="hook", callable="tests.test_delivery_unfinished_attempts:failing_hook")]


@pytest.fixture(autouse=True)
def no_calls_yet() -> None:
    HOOK_CALLS.clear()


def settings_for(database_url: str) -> Settings:
    return make_settings(database_url, lease_seconds=LEASE.total_seconds(),
                         max_unfinished_attempts=2, delivery_retry_schedule="60,60")


def lease_and_die(sessions: sessionmaker[Session], settings: Settings,
                  now: dt.datetime) -> int:
    """What a drain whose worker dies right after leasing leaves: a lease, no attempt."""
    with sessions.begin() as db:
        _, leased = lease_due_deliveries(
            db=db, now=now, limit=10, lease_seconds=settings.lease_seconds,
            max_unfinished_attempts=settings.max_unfinished_attempts)
    return len(leased)


def drain_at(sessions: sessionmaker[Session], settings: Settings, now: dt.datetime,
             targets: list[Target]) -> DrainReport:
    return drain_outbox(sessions=sessions, settings=settings, targets=targets,
                        clock=lambda: now)


def the_delivery(sessions: sessionmaker[Session]) -> Delivery:
    with sessions() as db:
        return db.scalars(select(Delivery)).one()


def test_a_delivery_whose_attempts_never_finish_ends_dead(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = settings_for(database_url)
    complete(sessions, RECORDS)
    t0 = utcnow()
    # Each lease runs out before the next: the worker died before recording.
    leased = [lease_and_die(sessions, settings, t0 + step * (LEASE + dt.timedelta(seconds=1)))
              for step in range(5)]
    assert leased == [1, 1, 1, 0, 0]  # MAX_UNFINISHED_ATTEMPTS=2: three leases, no more
    assert the_delivery(sessions).unfinished_attempts == 3

    report = drain_at(sessions, settings, t0 + dt.timedelta(minutes=5), RECORDS)

    assert report == DrainReport(leased=0, delivered=0, failed=0, gave_up=1)
    assert HOOK_CALLS == []
    delivery = the_delivery(sessions)
    assert delivery.state is DeliveryState.DEAD
    assert delivery.next_attempt_at is None and delivery.lease_token is None
    assert delivery.last_error == ("3 attempts in a row never finished (the worker died "
                                   "or hung while delivering)")
    assert delivery.attempts == 0  # none of them was recorded
    later = drain_at(sessions, settings, t0 + dt.timedelta(days=9), RECORDS)
    assert later == DrainReport(leased=0, delivered=0, failed=0, gave_up=0)


def test_a_recorded_attempt_starts_the_count_again(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = settings_for(database_url)
    complete(sessions, FAILS)
    t0 = utcnow()
    for step in range(2):
        assert lease_and_die(sessions, settings, t0 + step * LEASE * 2) == 1
    assert the_delivery(sessions).unfinished_attempts == 2

    report = drain_at(sessions, settings, t0 + LEASE * 4, FAILS)  # the last lease allowed

    assert report.leased == 1 and report.failed == 1
    delivery = the_delivery(sessions)
    assert delivery.state is DeliveryState.RETRYING and delivery.unfinished_attempts == 0
    assert delivery.last_error == "hook raised RuntimeError: the DMS is down"
    # Two more leases may die before it ends: the count starts from nothing.
    retry = delivery.next_attempt_at
    assert retry is not None
    assert [lease_and_die(sessions, settings, retry + step * LEASE * 2)
            for step in range(4)] == [1, 1, 1, 0]


def test_replay_starts_the_count_again(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = settings_for(database_url)
    complete(sessions, RECORDS)
    t0 = utcnow()
    for step in range(3):
        lease_and_die(sessions, settings, t0 + step * LEASE * 2)
    assert drain_at(sessions, settings, t0 + LEASE * 6, RECORDS).gave_up == 1

    with sessions.begin() as db:
        assert replay_deliveries(db=db, ids=[], all_dead=True, now=t0 + LEASE * 7) == 1
    assert the_delivery(sessions).unfinished_attempts == 0

    report = drain_at(sessions, settings, t0 + LEASE * 7, RECORDS)
    assert report == DrainReport(leased=1, delivered=1, failed=0, gave_up=0)
    assert len(HOOK_CALLS) == 1
    delivery = the_delivery(sessions)
    assert delivery.state is DeliveryState.DELIVERED and delivery.unfinished_attempts == 0

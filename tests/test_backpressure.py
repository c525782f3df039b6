"""Backpressure: a tick leases no more than the workers take from the broker's queue."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.helpers import Clock, add_session
from worker.models import DispatchState
from worker.tracking.backpressure import QueueReading, lease_allowance, too_soon
from worker.tracking.polling import dispatch_due_polls

T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def allowance(waiting: int | None, *, after: int | None = 10, elapsed: float = 5.0,
              target_wait: float = 5.0) -> int:
    previous = DispatchState(id=1, queue_after_tick=after,
                             ticked_at=T0 if after is not None else None)
    return lease_allowance(reading=QueueReading(waiting, T0 + dt.timedelta(seconds=elapsed)),
                           previous=previous, batch_size=100, dispatch_max=10_000,
                           target_wait=target_wait)


def test_a_broker_that_cannot_tell_gets_dispatch_max() -> None:
    assert allowance(None) == 10_000


def test_with_nothing_to_go_by_a_tick_starts_small() -> None:
    assert allowance(50, after=None) == 1_000  # the first tick: FIRST_OFFER messages
    assert allowance(0, after=0) == 1_000  # the last tick offered nothing


def test_a_queue_the_workers_keep_up_with_is_topped_up() -> None:
    # 10 messages after the last tick, 5 s ago; 5 left: they take 1 a second, so the
    # queue may hold 5 (what they take in the 5 s target wait): room for none more.
    assert allowance(5) == 0
    # 2 left: they took 8 in 5 s (1.6/s): 8 may wait, 6 more fit.
    assert allowance(2) == 600


def test_a_backlog_gets_nothing_more() -> None:
    assert allowance(10) == 0  # they took nothing: dead or stuck workers
    assert allowance(40) == 0  # others (a second beat, deliveries) added to it


def test_an_emptied_queue_is_offered_twice_the_pace_it_was_taken_at() -> None:
    assert allowance(0, after=20) == 4_000  # 20 in 5 s: 4 a second, 40 in the next 5 s
    assert allowance(0, after=80) == 10_000  # never more than DISPATCH_MAX
    # 20 taken in 50 s (the ticks were late): a pace of 0.4 a second, and never less
    # than the first offer.
    assert allowance(0, after=20, elapsed=50) == 1_000


def test_ticks_that_come_back_to_back_lease_nothing() -> None:
    previous = DispatchState(id=1, queue_after_tick=3, ticked_at=T0)
    soon = QueueReading(0, T0 + dt.timedelta(seconds=0.01))
    assert too_soon(reading=soon, previous=previous, min_gap=2.5)
    assert not too_soon(reading=QueueReading(0, T0 + dt.timedelta(seconds=2.5)),
                        previous=previous, min_gap=2.5)
    # A last tick stamped by a clock running ahead of this one holds nothing back...
    ahead = DispatchState(id=1, queue_after_tick=3, ticked_at=T0 + dt.timedelta(hours=1))
    assert not too_soon(reading=soon, previous=ahead, min_gap=2.5)
    # ...and is no pace to go by: the first offer, not DISPATCH_MAX.
    assert lease_allowance(reading=soon, previous=ahead, batch_size=100, dispatch_max=10_000,
                           target_wait=5) == 1_000
    # Without a queue reading there is no backpressure, and no tick is too soon.
    assert not too_soon(reading=QueueReading(None, soon.at), previous=previous, min_gap=2.5)


def test_dispatch_leases_what_the_workers_take(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """Workers that take 10 messages a tick, 3,000 sessions due: the queue stays within
    two ticks' worth, and the workers always have something to take. (Without
    backpressure, the first tick would have leased all 3,000: 300 messages, 30 ticks of
    work, their leases long run out before the workers reach them.)"""
    settings = make_settings(database_url, poll_batch_size=10, dispatch_interval=5)
    clock = Clock()
    with sessions.begin() as db:
        for number in range(3000):
            add_session(db, f"KEY-{number:04d}", next_poll_at=clock.now)
    queue: list[list[int]] = []

    def tick() -> int:
        return dispatch_due_polls(sessions=sessions, settings=settings, clock=clock,
                                  enqueue=lambda ids, token: queue.append(ids),
                                  waiting=lambda: len(queue))

    assert tick() == 100  # the first tick has nothing to go by: ten messages
    after_each_tick, taken = [], 0
    for _ in range(12):
        assert queue, f"the workers found nothing to take: {after_each_tick}"
        taken += len(queue[:10])
        del queue[:10]  # the workers take 10 messages (100 sessions) in a tick
        clock.advance(5)
        tick()
        after_each_tick.append(len(queue))
    assert max(after_each_tick) <= 20, after_each_tick
    assert taken == 120
    with sessions() as db:
        state = db.scalars(select(DispatchState)).one()
    assert state.queue_after_tick == len(queue) and state.ticked_at == clock.now

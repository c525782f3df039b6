"""Backpressure: a beat tick leases no more than the workers start within a short wait.

Leasing more than the workers take makes a backlog in the broker: messages wait past
their leases, and the tick's own message waits behind them. So each tick reads how many
messages wait in the broker's queue, and from the reading the tick before it left
(`dispatch_state`) works out how fast the workers take them. It tops the queue up to
what they take in `DISPATCH_INTERVAL` (at most half a lease), so a message waits about
one tick and is claimed well within its lease. When the queue is empty the workers took
everything they were given: the next tick offers twice as much (up to DISPATCH_MAX).
With no reading to go by (the first tick, a broker that cannot tell) a tick leases up
to DISPATCH_MAX, as it always did.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.db import insert_ignoring_duplicates
from worker.models import DispatchState

STATE_ID = 1


@dataclass(frozen=True)
class QueueReading:
    """Messages waiting in the broker (None: it cannot tell), and when."""

    waiting: int | None
    at: dt.datetime


def lease_allowance(*, reading: QueueReading, previous: DispatchState | None,
                    batch_size: int, dispatch_max: int, target_wait: float) -> int:
    """How many sessions this tick may lease."""
    waiting = reading.waiting
    if (waiting is None or previous is None or previous.ticked_at is None
            or not previous.queue_after_tick):
        return dispatch_max
    if waiting == 0:
        messages = 2.0 * previous.queue_after_tick
    else:
        elapsed = max((reading.at - previous.ticked_at).total_seconds(), 1e-3)
        taken_per_second = max(0, previous.queue_after_tick - waiting) / elapsed
        messages = taken_per_second * target_wait - waiting
    return max(0, min(dispatch_max, math.floor(messages) * batch_size))


def load_dispatch_state(db: Session) -> DispatchState:
    """The state row, locked until the tick's transaction ends (two beats take turns)."""
    db.execute(insert_ignoring_duplicates(db, DispatchState, unique=["id"]).values(id=STATE_ID))
    return db.scalars(select(DispatchState).where(DispatchState.id == STATE_ID)
                      .with_for_update()).one()


def note_tick(state: DispatchState, *, reading: QueueReading, messages_sent: int) -> None:
    state.ticked_at = reading.at
    state.queue_after_tick = None if reading.waiting is None else reading.waiting + messages_sent

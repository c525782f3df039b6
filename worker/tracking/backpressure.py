"""Backpressure: a beat tick leases no more than the workers start within a short wait.

Leasing more than the workers take makes a backlog in the broker: messages wait past
their leases (and a later tick hands their sessions out again, so the first message is
wasted), and the tick's own message waits behind them. So each tick reads how many
messages wait in the broker's queue, and from the reading the tick before it left
(`dispatch_state`) works out how fast the workers take them:

- messages still waiting: the workers are busy; top the queue up to what they take in
  `DISPATCH_INTERVAL` (at most half a lease), so a message waits about one tick and is
  claimed well within its lease, and the tick's own message, in the same queue, runs
  about one tick late, well before it expires;
- the queue empty: the workers took everything they were given, perhaps faster than it
  says; offer twice that pace, and never less than `FIRST_OFFER` messages;
- nothing to go by (the first tick, or the last one offered nothing): `FIRST_OFFER`
  messages, doubling tick by tick while the workers keep up (TCP's slow start).

DISPATCH_MAX bounds every tick. A broker that cannot tell its queue's length gets
DISPATCH_MAX every tick, as before. A tick less than half a DISPATCH_INTERVAL after the
last one leases nothing: ticks that waited in a backlog together run back to back, and
each would otherwise take the last one's offer for a pace.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy.orm import Session

from worker.db import locked_singleton
from worker.models import DispatchState

STATE_ID = 1
FIRST_OFFER = 10  # messages, with nothing to go by: a thousand sessions at the defaults


@dataclass(frozen=True)
class QueueReading:
    """Messages waiting in the broker (None: it cannot tell), and when."""

    waiting: int | None
    at: dt.datetime


def too_soon(*, reading: QueueReading, previous: DispatchState, min_gap: float) -> bool:
    """A tick this close after the last one leases nothing and leaves no reading (so a
    stream of such ticks cannot push the next real one away for ever)."""
    if reading.waiting is None or previous.ticked_at is None:
        return False
    # A negative gap is another host's clock running ahead, not a tick: it must not
    # hold this host's ticks back until real time catches up with that clock.
    return 0 <= (reading.at - previous.ticked_at).total_seconds() < min_gap


def lease_allowance(*, reading: QueueReading, previous: DispatchState | None,
                    batch_size: int, dispatch_max: int, target_wait: float) -> int:
    """How many sessions this tick may lease; `target_wait` is how long a message may wait."""
    waiting = reading.waiting
    if waiting is None:
        return dispatch_max
    elapsed = 0.0 if previous is None or previous.ticked_at is None else (
        reading.at - previous.ticked_at).total_seconds()
    if previous is None or not previous.queue_after_tick or elapsed <= 0:
        # Nothing to go by (a reading from a clock ahead of ours is nothing either).
        messages = float(FIRST_OFFER)
    else:
        taken_per_second = max(0, previous.queue_after_tick - waiting) / elapsed
        if waiting == 0:
            # They may have idled part of the time: what they took is a floor on their pace.
            messages = max(FIRST_OFFER, 2 * taken_per_second * target_wait)
        else:
            messages = taken_per_second * target_wait - waiting
    return max(0, min(dispatch_max, math.floor(messages) * batch_size))


def load_dispatch_state(db: Session) -> DispatchState:
    """The state row, locked until the tick's transaction ends (two beats take turns)."""
    return locked_singleton(db, DispatchState, row_id=STATE_ID)


def note_tick(state: DispatchState, *, reading: QueueReading, messages_sent: int) -> None:
    state.ticked_at = reading.at
    state.queue_after_tick = None if reading.waiting is None else reading.waiting + messages_sent

"""The transactional outbox: events written with the observation, deliveries drained later.

Event rows are unique per (session, dedupe key) and delivery rows per (event, target):
constraints, so a poll recorded twice can never make a second event. Deliveries are
leased like sessions (a token, and `next_attempt_at` moved to the lease's expiry), so a
worker killed mid-delivery leaves the delivery to be attempted again once the lease
runs out, under the same id.

Each lease counts in `unfinished_attempts` and each recorded attempt clears it, so the
count is how many attempts in a row never finished. A delivery that kills or hangs its
worker every time would otherwise be leased again at every expiry forever: past
MAX_UNFINISHED_ATTEMPTS it is no longer leased but ends `dead`, as a session's polls end
`gave_up` past MAX_UNFINISHED_POLLS (`worker.tracking.leasing`).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Insert, func, select, text, update
from sqlalchemy.orm import Session

from worker.backoff import JITTER
from worker.db import insert_ignoring_duplicates
from worker.delivery.attempts import AttemptResult
from worker.delivery.events import Observed, event_document, events_for, serialise
from worker.delivery.targets import Target
from worker.errors import BadInput
from worker.leases import new_token
from worker.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Event,
    StatusChange,
    TrackedSession,
)

IS_DUE = text("deliveries.state IN ('pending', 'retrying')")
# The account an event belongs to: its session's, or for an account's own event, its own.
# (Read with `events` outer-joined to `tracked_sessions`.)
EVENT_ACCOUNT = func.coalesce(TrackedSession.account, Event.account)


def new_delivery_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def record_events(
    *,
    db: Session,
    tracked: TrackedSession,
    observed: Observed,
    targets: Sequence[Target],
    now: dt.datetime,
    results: dict[str, Any] | None = None,
    dealer_name: str | None = None,
    first_attempt_at: dt.datetime | None = None,
) -> int:
    """Write the events this observation calls for, one delivery per subscribed target
    (a target that names accounts subscribes to theirs only).

    Returns how many deliveries were added. Call it in the transaction that records
    the observation.
    """
    added = 0
    history: list[StatusChange] | None = None
    for spec in events_for(observed):
        subscribed = [target for target in targets
                      if target.wants(spec.type, tracked.account)]
        if not subscribed:
            continue
        if history is None:
            db.flush()
            history = list(db.scalars(select(StatusChange)
                                      .where(StatusChange.session_id == tracked.id)
                                      .order_by(StatusChange.poll_number)))
        document = event_document(
            event_type=spec.type,
            tracked=tracked,
            history=history,
            previous_status=observed.change.from_status if observed.change else tracked.status,
            occurred_at=now,
            results=results if spec.type == "session.completed" else None,
            dealer_name=dealer_name,
            extra=spec.data,
        )
        event = insert_ignoring_duplicates(db, Event, unique=["session_id", "dedupe_key"]) \
            .values(session_id=tracked.id, type=spec.type, dedupe_key=spec.dedupe_key,
                    occurred_at=now, body=serialise(document))
        added += _record_once(db=db, event=event, subscribed=subscribed,
                              first_attempt_at=first_attempt_at or now, now=now)
    return added


def record_account_event(
    *, db: Session, account: str, event_type: str, dedupe_key: str,
    document: dict[str, Any], targets: Sequence[Target], now: dt.datetime,
) -> int:
    """Write an account's own event (no session: `account.digest`), unique per account
    and dedupe key, one delivery per target subscribed to it for this account.

    Returns how many deliveries were added: none when it was already recorded, by this
    beat or by another one."""
    subscribed = [target for target in targets if target.wants(event_type, account)]
    if not subscribed:
        return 0
    event = insert_ignoring_duplicates(db, Event, unique=["account", "dedupe_key"],
                                       where=Event.session_id.is_(None)) \
        .values(session_id=None, account=account, type=event_type, dedupe_key=dedupe_key,
                occurred_at=now, body=serialise(document))
    return _record_once(db=db, event=event, subscribed=subscribed, first_attempt_at=now,
                        now=now)


def _record_once(*, db: Session, event: Insert, subscribed: Sequence[Target],
                 first_attempt_at: dt.datetime, now: dt.datetime) -> int:
    """The event, unless its unique key is already taken, and its deliveries."""
    event_id = db.scalar(event.returning(Event.id))
    if event_id is None:
        return 0  # already recorded: the constraint keeps it to once
    rows = [{"id": new_delivery_id(), "event_id": event_id, "target": target.name,
             "state": DeliveryState.PENDING, "attempts": 0, "failures": 0,
             "next_attempt_at": first_attempt_at, "created_at": now}
            for target in subscribed]
    inserted = db.scalars(
        insert_ignoring_duplicates(db, Delivery, unique=["event_id", "target"])
        .returning(Delivery.id),
        rows,
    )
    return len(inserted.all())


@dataclass(frozen=True)
class LeasedDelivery:
    id: str
    target: str
    event_type: str
    body: str
    # Sent again by hand (`replay`): an ADF lead says so (`status="resend"`).
    replayed: bool = False


def lease_due_deliveries(
    *, db: Session, now: dt.datetime, limit: int, lease_seconds: float,
    max_unfinished_attempts: int,
) -> tuple[str, list[LeasedDelivery]]:
    """Lease up to `limit` deliveries due now, oldest first (SKIP LOCKED on PostgreSQL).

    One whose last leases all ran out unrecorded, more than `max_unfinished_attempts` in
    a row, is left out: `give_up_on_deliveries_that_kill_their_worker` ends it instead.
    """
    token = new_token()
    expires = now + dt.timedelta(seconds=lease_seconds)
    due = (
        select(Delivery.id)
        .where(IS_DUE, Delivery.next_attempt_at <= now,
               Delivery.unfinished_attempts <= max_unfinished_attempts)
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(db.scalars(
        update(Delivery)
        .where(Delivery.id.in_(due.scalar_subquery()))
        .values(lease_token=token, leased_until=expires, next_attempt_at=expires,
                unfinished_attempts=Delivery.unfinished_attempts + 1)
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    ))
    if not ids:
        return token, []
    rows = db.execute(
        select(Delivery.id, Delivery.target, Event.type, Event.body, Delivery.replays > 0)
        .join(Event, Event.id == Delivery.event_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.created_at)
    )
    return token, [LeasedDelivery(*row) for row in rows]


def give_up_on_deliveries_that_kill_their_worker(
    *, db: Session, now: dt.datetime, max_unfinished_attempts: int
) -> list[Delivery]:
    """End, `dead`, the due deliveries leased more than `max_unfinished_attempts` times in
    a row with no attempt recorded (OOM, a crash, a hang); returns them.

    Run it before `lease_due_deliveries`, in the same transaction.
    """
    ended = list(db.scalars(
        select(Delivery)
        .where(IS_DUE, Delivery.next_attempt_at <= now,
               Delivery.unfinished_attempts > max_unfinished_attempts)
        .with_for_update(skip_locked=True)
    ))
    for delivery in ended:
        delivery.state = DeliveryState.DEAD
        delivery.next_attempt_at = delivery.lease_token = delivery.leased_until = None
        delivery.last_status_code = None
        delivery.last_error = (f"{delivery.unfinished_attempts} attempts in a row never "
                               "finished (the worker died or hung while delivering)")
    return ended


def has_due_deliveries(*, db: Session, now: dt.datetime) -> bool:
    return db.scalar(
        select(Delivery.id).where(IS_DUE, Delivery.next_attempt_at <= now).limit(1)
    ) is not None


def record_attempt(
    *,
    db: Session,
    delivery_id: str,
    lease_token: str,
    result: AttemptResult,
    now: dt.datetime,
    retry_schedule: Sequence[float],
    rng: random.Random,
) -> Delivery | None:
    """Log the attempt and move the delivery on; None if the lease was lost meanwhile."""
    delivery = db.scalar(
        select(Delivery)
        .where(Delivery.id == delivery_id, Delivery.lease_token == lease_token)
        .with_for_update()
    )
    if delivery is None:
        return None
    db.add(DeliveryAttempt(delivery_id=delivery.id, attempted_at=now,
                           duration_ms=result.duration_ms, status_code=result.status_code,
                           error=result.error))
    delivery.attempts += 1
    delivery.unfinished_attempts = 0
    delivery.lease_token = None
    delivery.leased_until = None
    delivery.last_status_code = result.status_code
    delivery.last_error = result.error
    if result.delivered:
        delivery.state = DeliveryState.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        return delivery
    delivery.failures += 1
    if result.permanent or delivery.failures > len(retry_schedule):
        delivery.state = DeliveryState.DEAD
        delivery.next_attempt_at = None
        return delivery
    delay = retry_schedule[delivery.failures - 1] * rng.uniform(1 - JITTER, 1 + JITTER)
    if result.retry_after is not None:
        delay = max(delay, result.retry_after)
    delivery.state = DeliveryState.RETRYING
    delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
    return delivery


def replay_deliveries(
    *, db: Session, ids: Sequence[str], all_dead: bool, now: dt.datetime,
    accounts: Sequence[str] | None = None,
) -> int:
    """Attempt these deliveries again from the start of the schedule, under the same ids.

    With `accounts`, only those accounts' deliveries exist: another's is "no such
    delivery", exactly as an unknown id is."""
    query = select(Delivery)
    if accounts is not None:
        query = query.where(Delivery.event_id.in_(
            select(Event.id).outerjoin(TrackedSession, TrackedSession.id == Event.session_id)
            .where(EVENT_ACCOUNT.in_(list(accounts)))))
    if all_dead:
        query = query.where(Delivery.state == DeliveryState.DEAD)
    else:
        found = list(db.scalars(query.with_only_columns(Delivery.id)
                                .where(Delivery.id.in_(list(ids)))))
        missing = [delivery_id for delivery_id in ids if delivery_id not in found]
        if missing:
            raise BadInput(f"no such delivery: {', '.join(missing[:5])}")
        query = query.where(Delivery.id.in_(list(ids)))
    replayed = 0
    for delivery in db.scalars(query.with_for_update()):
        delivery.state = DeliveryState.PENDING
        delivery.replays += 1
        delivery.failures = 0
        delivery.unfinished_attempts = 0
        delivery.next_attempt_at = now
        delivery.lease_token = None
        delivery.leased_until = None
        replayed += 1
    return replayed


def list_deliveries(
    *, db: Session, state: DeliveryState | None = None, session_id: int | None = None,
    accounts: Sequence[str] | None = None, limit: int | None = None, offset: int = 0,
) -> list[DeliveryRow]:
    """Deliveries, oldest first, with their event, session key (None for an account's
    own event) and account; with `accounts`, those accounts' only."""
    query = (
        select(Delivery, Event, TrackedSession.session_key, EVENT_ACCOUNT)
        .join(Event, Event.id == Delivery.event_id)
        .outerjoin(TrackedSession, TrackedSession.id == Event.session_id)
        .order_by(Delivery.created_at, Delivery.id)
        .offset(offset)
    )
    if state is not None:
        query = query.where(Delivery.state == state)
    if session_id is not None:
        query = query.where(Event.session_id == session_id)
    if accounts is not None:
        query = query.where(EVENT_ACCOUNT.in_(list(accounts)))
    if limit is not None:
        query = query.limit(limit)
    return [DeliveryRow(*row) for row in db.execute(query)]


class DeliveryRow(NamedTuple):
    delivery: Delivery
    event: Event
    session_key: str | None
    account: str

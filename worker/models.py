"""Tables: the tracked sessions and the history of their statuses."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worker.db import Base, JSONDocument, UTCDateTime

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a bigint.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Tracking(enum.StrEnum):
    """The tracker's own state of a session (SPEC, "Tracking states")."""

    ACTIVE = "active"
    DONE = "done"
    NOT_FOUND = "not_found"
    GAVE_UP = "gave_up"
    STOPPED = "stopped"


TrackingColumn = Enum(
    Tracking,
    name="tracking",
    native_enum=False,
    create_constraint=True,
    length=16,
    values_callable=lambda states: [state.value for state in states],
)


class TrackedSession(Base):
    __tablename__ = "tracked_sessions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    session_key: Mapped[str] = mapped_column(String(64), unique=True)
    # The PAVE account it is polled with (`worker.accounts`); a key is tracked under one.
    account: Mapped[str] = mapped_column(String(32), default="default",
                                         server_default="default")
    tracking: Mapped[Tracking] = mapped_column(TrackingColumn, default=Tracking.ACTIVE)

    # What PAVE said, as it said it.
    status: Mapped[str | None] = mapped_column(String(64))
    pave_created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    pave_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    inspect_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    inspect_ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    vehicle: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    options: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    # The customer's capture link (PAVE's `redirect_url`).
    redirect_url: Mapped[str | None] = mapped_column(Text)
    # When the session entered its current status (as first observed); NULL for a status
    # seen before migration 0009, which kept no such time.
    status_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The next time a nudge (`session.stalled`, `session.reminder`) may be due, as the
    # settings said when it was worked out; NULL when none can be (`worker.tracking.nudges`).
    nudge_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Of the current status: reminders sent, and whether it was announced as stalled.
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    stall_announced: Mapped[bool] = mapped_column(Boolean, default=False,
                                                  server_default=text("false"))

    # What the dealer handed in with the key (`--meta`, `--email`, CSV columns).
    user_metadata: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)

    # Polling bookkeeping.
    poll_count: Mapped[int] = mapped_column(Integer, default=0)
    last_polled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When the next poll is due. Leasing moves it to the lease's expiry, so a session
    # whose worker died becomes due again by itself; NULL once tracking has ended.
    next_poll_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    leased_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    consecutive_errors: Mapped[int] = mapped_column(Integer, default=0)
    # Leases that ran out with no result recorded: the worker died or hung mid-poll.
    # Bounded (MAX_UNFINISHED_POLLS), so a session that kills its worker cannot loop.
    unfinished_polls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    not_found_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    tracked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    history: Mapped[list[StatusChange]] = relationship(
        back_populates="session",
        order_by="StatusChange.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (
        # "Which sessions are due" reads only active rows in next_poll_at order: a
        # partial index keeps that cheap however many finished sessions pile up.
        Index(
            "ix_tracked_sessions_due",
            "next_poll_at",
            postgresql_where=text("tracking = 'active'"),
            sqlite_where=text("tracking = 'active'"),
        ),
        # A beat tick's nudges read active rows in nudge_at order: one range scan.
        Index(
            "ix_tracked_sessions_nudge",
            "nudge_at",
            postgresql_where=text("tracking = 'active' AND nudge_at IS NOT NULL"),
            sqlite_where=text("tracking = 'active' AND nudge_at IS NOT NULL"),
        ),
        # No other index: each poll rewrites the row and pays for every index (see
        # migration 0005); listings filter while reading in id order.
    )


class StatusChange(Base):
    """One observed change of PAVE status; the first status seen has `from_status` NULL."""

    __tablename__ = "status_changes"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("tracked_sessions.id", ondelete="CASCADE"))
    # The poll that saw the change. One poll records at most one change, so a poll
    # applied twice cannot write its row twice: the constraint refuses it.
    poll_number: Mapped[int] = mapped_column(Integer)
    from_status: Mapped[str | None] = mapped_column(String(64))
    to_status: Mapped[str] = mapped_column(String(64))
    observed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    pave_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    session: Mapped[TrackedSession] = relationship(back_populates="history")

    __table_args__ = (UniqueConstraint("session_id", "poll_number"),)


class Event(Base):
    """Something that happened to a session, or to an account, written in the transaction
    that saw it.

    `dedupe_key` is the event type, or for `session.status_changed` the type and the
    poll that saw the change: the constraint makes each event exist once per session.
    An account's own event (`account.digest`) has no session but its `account`, and a
    dedupe key naming its day, unique per account. `body` is the exact JSON document
    every delivery of it sends.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("tracked_sessions.id", ondelete="CASCADE"))
    # Set on an account's own events only; a session's event has its session's account.
    account: Mapped[str | None] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(40))
    dedupe_key: Mapped[str] = mapped_column(String(80))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    body: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("session_id", "dedupe_key"),
        # NULLs are distinct in the constraint above, so an account's events have their own.
        Index("ix_events_account_dedupe", "account", "dedupe_key", unique=True,
              postgresql_where=text("session_id IS NULL"),
              sqlite_where=text("session_id IS NULL")),
        CheckConstraint("session_id IS NOT NULL OR account IS NOT NULL",
                        name="session_or_account"),
    )


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD = "dead"


DeliveryStateColumn = Enum(
    DeliveryState,
    name="delivery_state",
    native_enum=False,
    create_constraint=True,
    length=16,
    values_callable=lambda states: [state.value for state in states],
)


class Delivery(Base):
    """One event for one target: the outbox row. Its id is the `webhook-id`."""

    __tablename__ = "deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(100))
    state: Mapped[DeliveryState] = mapped_column(DeliveryStateColumn)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Failures since the delivery was created or replayed: the step of the retry schedule.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    # Like a session's next_poll_at: leasing moves it to the lease's expiry.
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    leased_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Attempts leased and never recorded in a row (the worker died or hung mid-delivery):
    # bounded, like a session's unfinished polls.
    unfinished_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Times it was sent again by hand (`replay`).
    replays: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    event: Mapped[Event] = relationship()

    __table_args__ = (
        UniqueConstraint("event_id", "target"),
        Index(
            "ix_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("state IN ('pending', 'retrying')"),
            sqlite_where=text("state IN ('pending', 'retrying')"),
        ),
        Index("ix_deliveries_state", "state"),
    )


class DeliveryAttempt(Base):
    """One try of a delivery: what came back and how long it took."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class AccountPause(Base):
    """A PAVE account's pause, shared by every worker: one row per account, made on its
    first pause.

    A 429 or a refused credential pauses polling for that account until `paused_until`,
    instead of each session backing off on its own; other accounts go on.
    """

    __tablename__ = "account_pauses"

    account: Mapped[str] = mapped_column(String(32), primary_key=True)
    paused_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    pause_reason: Mapped[str | None] = mapped_column(Text)


class DispatchState(Base):
    """What the last beat tick saw of the broker's queue: one row, id 1.

    From it the next tick works out how fast the workers take poll work, so it never
    leases far more than they start within a lease (see `worker.tracking.backpressure`).
    """

    __tablename__ = "dispatch_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_after_tick: Mapped[int | None] = mapped_column(Integer)
    ticked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

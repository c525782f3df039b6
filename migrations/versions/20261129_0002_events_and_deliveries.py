"""Events, the delivery outbox, and the log of delivery attempts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DUE = "state IN ('pending', 'retrying')"


def Time() -> sa.DateTime:  # noqa: N802  (reads like a type in the column lists)
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", Id, nullable=False),
        sa.Column("session_id", Id, nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("dedupe_key", sa.String(length=80), nullable=False),
        sa.Column("occurred_at", Time(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["tracked_sessions.id"],
                                name=op.f("fk_events_session_id_tracked_sessions"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("session_id", "dedupe_key", name=op.f("uq_events_session_id")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("event_id", Id, nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column(
            "state",
            sa.Enum("pending", "delivered", "retrying", "dead", name="delivery_state",
                    native_enum=False, create_constraint=True, length=16),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Time(), nullable=True),
        sa.Column("lease_token", sa.String(length=36), nullable=True),
        sa.Column("leased_until", Time(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", Time(), nullable=False),
        sa.Column("delivered_at", Time(), nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"],
                                name=op.f("fk_deliveries_event_id_events"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("event_id", "target", name=op.f("uq_deliveries_event_id")),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["next_attempt_at"],
                    postgresql_where=sa.text(DUE), sqlite_where=sa.text(DUE))
    op.create_index("ix_deliveries_state", "deliveries", ["state"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", Id, nullable=False),
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("attempted_at", Time(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"],
                                name=op.f("fk_delivery_attempts_delivery_id_deliveries"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    op.create_index("ix_delivery_attempts_delivery_id", "delivery_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("delivery_attempts")
    op.drop_index("ix_deliveries_state", table_name="deliveries")
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_table("events")

"""Tracked sessions and their status history.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def Time() -> sa.DateTime:  # noqa: N802  (reads like a type in the column lists)
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tracked_sessions",
        sa.Column("id", Id, nullable=False),
        sa.Column("session_key", sa.String(length=64), nullable=False),
        sa.Column(
            "tracking",
            sa.Enum(
                "active", "done", "not_found", "gave_up", "stopped",
                name="tracking", native_enum=False, create_constraint=True, length=16,
            ),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("pave_created_at", Time(), nullable=True),
        sa.Column("pave_updated_at", Time(), nullable=True),
        sa.Column("inspect_started_at", Time(), nullable=True),
        sa.Column("inspect_ended_at", Time(), nullable=True),
        sa.Column("vehicle", JSONDocument, nullable=True),
        sa.Column("options", JSONDocument, nullable=True),
        sa.Column("user_metadata", JSONDocument, nullable=False),
        sa.Column("poll_count", sa.Integer(), nullable=False),
        sa.Column("last_polled_at", Time(), nullable=True),
        sa.Column("next_poll_at", Time(), nullable=True),
        sa.Column("lease_token", sa.String(length=36), nullable=True),
        sa.Column("leased_until", Time(), nullable=True),
        sa.Column("consecutive_errors", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("not_found_since", Time(), nullable=True),
        sa.Column("tracked_at", Time(), nullable=False),
        sa.Column("finished_at", Time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracked_sessions")),
        sa.UniqueConstraint("session_key", name=op.f("uq_tracked_sessions_session_key")),
    )
    op.create_index(
        "ix_tracked_sessions_due",
        "tracked_sessions",
        ["next_poll_at"],
        postgresql_where=sa.text("tracking = 'active'"),
        sqlite_where=sa.text("tracking = 'active'"),
    )
    op.create_index("ix_tracked_sessions_status", "tracked_sessions", ["status"])
    op.create_index("ix_tracked_sessions_tracking", "tracked_sessions", ["tracking"])

    op.create_table(
        "status_changes",
        sa.Column("id", Id, nullable=False),
        sa.Column("session_id", Id, nullable=False),
        sa.Column("poll_number", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(length=64), nullable=True),
        sa.Column("to_status", sa.String(length=64), nullable=False),
        sa.Column("observed_at", Time(), nullable=False),
        sa.Column("pave_updated_at", Time(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["tracked_sessions.id"],
            name=op.f("fk_status_changes_session_id_tracked_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_changes")),
        sa.UniqueConstraint(
            "session_id", "poll_number", name=op.f("uq_status_changes_session_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("status_changes")
    op.drop_index("ix_tracked_sessions_tracking", table_name="tracked_sessions")
    op.drop_index("ix_tracked_sessions_status", table_name="tracked_sessions")
    op.drop_index("ix_tracked_sessions_due", table_name="tracked_sessions")
    op.drop_table("tracked_sessions")

"""Drop the single-column indexes on status and tracking: every poll pays for them.

Every poll rewrites its session's row with a new `next_poll_at`, which PostgreSQL cannot
do in place (a HOT update) since that column is indexed; so each poll inserts an entry
into every index of the table. These two served only the operator's filtered listings,
which read in id order and filter just as well; "what is due" has its partial index.
Measured on 1,000,000 rows (scripts/benchmark.py): leasing 10,000 went from about
155 ms to about 75 ms.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_tracked_sessions_tracking", table_name="tracked_sessions")
    op.drop_index("ix_tracked_sessions_status", table_name="tracked_sessions")


def downgrade() -> None:
    op.create_index("ix_tracked_sessions_status", "tracked_sessions", ["status"])
    op.create_index("ix_tracked_sessions_tracking", "tracked_sessions", ["tracking"])

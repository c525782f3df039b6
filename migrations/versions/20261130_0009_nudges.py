"""What nudges need (SPEC, "Nudges and digests"): the customer's capture link (PAVE's
`redirect_url`), when the session entered its current status, and when its next nudge
may be due (with a partial index, so a beat tick finds them in one range scan), with
the reminders sent and whether the stall was announced for the current status.

Nullable or with constant defaults, filled as polls see status changes (expand, nothing
rewritten): a session's `status_since` stays NULL until its next status change, since no
earlier time was kept, and it is not nudged before then.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tracked_sessions") as batch:
        batch.add_column(sa.Column("redirect_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("status_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("nudge_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reminders_sent", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("stall_announced", sa.Boolean(), nullable=False,
                                   server_default=sa.text("false")))
    # Empty at first (every nudge_at is NULL), so building it locks nothing for long.
    op.create_index("ix_tracked_sessions_nudge", "tracked_sessions", ["nudge_at"],
                    postgresql_where=sa.text("tracking = 'active' AND nudge_at IS NOT NULL"),
                    sqlite_where=sa.text("tracking = 'active' AND nudge_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_tracked_sessions_nudge", table_name="tracked_sessions")
    with op.batch_alter_table("tracked_sessions") as batch:
        batch.drop_column("stall_announced")
        batch.drop_column("reminders_sent")
        batch.drop_column("nudge_at")
        batch.drop_column("status_since")
        batch.drop_column("redirect_url")

"""Holding up under overload: the dispatcher's queue reading, a seeded account row, and
bounded delivery attempts.

- `dispatch_state` (one row): how many messages the broker's queue held after the last
  tick, and when; the next tick works out from it how fast the workers take work, and
  leases no more than they start within a lease (backpressure).
- `pave_account` gets its row now, so the first two pauses at once cannot race to insert it.
- `deliveries.unfinished_attempts`: attempts leased and never recorded (the worker died
  or hung mid-delivery), bounded like a session's unfinished polls.

A new table, one row each, and a column with a constant default: PostgreSQL adds such a
column without rewriting the table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dispatch_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("queue_after_tick", sa.Integer(), nullable=True),
        sa.Column("ticked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_state")),
    )
    op.execute("INSERT INTO dispatch_state (id) VALUES (1)")
    op.execute("INSERT INTO pave_account (id) SELECT 1 WHERE NOT EXISTS "
               "(SELECT 1 FROM pave_account WHERE id = 1)")
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("unfinished_attempts", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("unfinished_attempts")
    op.drop_table("dispatch_state")

"""Dealer groups: every session belongs to a PAVE account, and each account pauses alone.

- `tracked_sessions.account`: the account's name from the settings (`default` for the
  `PAVE_*` variables); existing sessions belong to `default`. A column with a constant
  default: PostgreSQL (11 and later) adds it without rewriting the table, SQLite alike.
- `account_pauses`, keyed by account name, replaces the one-row `pave_account`: a 429 or
  refused credentials pause that account only. A running pause moves to `default`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tracked_sessions") as batch:
        batch.add_column(sa.Column("account", sa.String(length=32), nullable=False,
                                   server_default="default"))
    op.create_table(
        "account_pauses",
        sa.Column("account", sa.String(length=32), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pause_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_account_pauses")),
    )
    op.execute("INSERT INTO account_pauses (account, paused_until, pause_reason) "
               "SELECT 'default', paused_until, pause_reason FROM pave_account "
               "WHERE id = 1 AND paused_until IS NOT NULL")
    op.drop_table("pave_account")


def downgrade() -> None:
    # Before accounts every session was polled with the PAVE_* credentials: another
    # account's would be asked about with the wrong ones and end `not_found`.
    others = op.get_bind().scalar(sa.text(
        "SELECT count(*) FROM tracked_sessions WHERE account <> 'default'"))
    if others:
        raise RuntimeError(f"{others} sessions belong to accounts other than 'default': "
                           "untrack and delete them before going back to revision 0006")
    op.create_table(
        "pave_account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pause_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pave_account")),
    )
    op.execute("INSERT INTO pave_account (id, paused_until, pause_reason) "
               "SELECT 1, paused_until, pause_reason FROM account_pauses "
               "WHERE account = 'default'")
    op.execute("INSERT INTO pave_account (id) SELECT 1 WHERE NOT EXISTS "
               "(SELECT 1 FROM pave_account WHERE id = 1)")
    op.drop_table("account_pauses")
    with op.batch_alter_table("tracked_sessions") as batch:
        batch.drop_column("account")

"""Events of an account, not of one session: `account.digest` (SPEC, "Nudges and
digests"). Such an event has no session but its `account`, and is unique per account and
dedupe key (the digest's local date), by a partial unique index beside the per-session
constraint (whose NULL session ids would all be distinct).

On PostgreSQL every step is a catalogue change but two: the check is added NOT VALID
(new rows are checked; the old ones all have a session), and the index is built by one
scan of `events` under a SHARE lock, which holds up the recording of new events while
it runs (about a second per few million events here). On SQLite the table is copied
(batch mode), as SQLite alters a column no other way.

Going back deletes the account events (digests) and their deliveries: the older schema
has nowhere to keep them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "session_id IS NOT NULL OR account IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("account", sa.String(32), nullable=True))
        batch.alter_column("session_id", existing_type=sa.BigInteger(), nullable=True)
        batch.create_check_constraint("session_or_account", sa.text(CHECK),
                                      postgresql_not_valid=True)
    op.create_index("ix_events_account_dedupe", "events", ["account", "dedupe_key"],
                    unique=True, postgresql_where=sa.text("session_id IS NULL"),
                    sqlite_where=sa.text("session_id IS NULL"))


def downgrade() -> None:
    op.execute("DELETE FROM events WHERE session_id IS NULL")
    op.drop_index("ix_events_account_dedupe", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("session_or_account", type_="check")
        batch.alter_column("session_id", existing_type=sa.BigInteger(), nullable=False)
        batch.drop_column("account")

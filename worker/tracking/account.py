"""Pausing one PAVE account: after a 429, or when PAVE refuses its credentials.

Every worker reads the same rows (`account_pauses`, one per account once paused): a beat
tick leases nothing of a paused account, a batch of it asks nothing (it hands its
sessions back, due when the pause ends), and a push for it polls nothing. Other accounts
go on. Within a process the account's gate (`worker.pave.gate`) stops the other threads'
requests for that account at once.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.db import insert_ignoring_duplicates
from worker.models import AccountPause


def pause_account(*, db: Session, account: str, until: dt.datetime,
                  reason: str) -> dt.datetime:
    """Pause polling of `account` until `until` (a pause already running longer is kept);
    returns when the pause ends."""
    # ON CONFLICT DO NOTHING, then lock: two first pauses at once cannot both insert.
    db.execute(insert_ignoring_duplicates(db, AccountPause, unique=["account"])
               .values(account=account))
    pause = db.scalars(select(AccountPause).where(AccountPause.account == account)
                       .with_for_update()).one()
    if pause.paused_until is None or pause.paused_until < until:
        pause.paused_until = until
        pause.pause_reason = reason
    return pause.paused_until


def account_paused_until(*, db: Session, account: str,
                         now: dt.datetime) -> dt.datetime | None:
    paused_until = db.scalar(select(AccountPause.paused_until)
                             .where(AccountPause.account == account))
    return paused_until if paused_until is not None and paused_until > now else None


def paused_accounts(*, db: Session, now: dt.datetime) -> dict[str, dt.datetime]:
    """Every account paused at `now`, with when its pause ends."""
    return {account: until for account, until in db.execute(
        select(AccountPause.account, AccountPause.paused_until)
        .where(AccountPause.paused_until > now)) if until is not None}

"""Pausing the whole PAVE account: after a 429, or when PAVE refuses the credentials.

Every worker reads the same row, so one worker's 429 stops them all; a beat tick leases
nothing while the account is paused.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.models import PaveAccount

ACCOUNT_ID = 1


def pause_account(*, db: Session, until: dt.datetime, reason: str) -> dt.datetime:
    """Pause polling until `until` (a pause already running longer is kept); returns
    when the pause ends."""
    account = db.scalar(select(PaveAccount).where(PaveAccount.id == ACCOUNT_ID)
                        .with_for_update())
    if account is None:
        account = PaveAccount(id=ACCOUNT_ID)
        db.add(account)
    if account.paused_until is None or account.paused_until < until:
        account.paused_until = until
        account.pause_reason = reason
    return account.paused_until


def account_paused_until(*, db: Session, now: dt.datetime) -> dt.datetime | None:
    paused_until = db.scalar(select(PaveAccount.paused_until)
                             .where(PaveAccount.id == ACCOUNT_ID))
    return paused_until if paused_until is not None and paused_until > now else None

"""Pausing the whole PAVE account: after a 429, or when PAVE refuses the credentials.

Every worker reads the same row: a beat tick leases nothing while the account is paused,
a batch asks nothing (it hands its sessions back, due when the pause ends), and a push
polls nothing. Within a process the account's gate (`worker.pave.gate`) stops the other
threads' requests at once.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.db import locked_singleton
from worker.models import PaveAccount

ACCOUNT_ID = 1


def pause_account(*, db: Session, until: dt.datetime, reason: str) -> dt.datetime:
    """Pause polling until `until` (a pause already running longer is kept); returns
    when the pause ends."""
    account = locked_singleton(db, PaveAccount, row_id=ACCOUNT_ID)
    if account.paused_until is None or account.paused_until < until:
        account.paused_until = until
        account.pause_reason = reason
    return account.paused_until


def account_paused_until(*, db: Session, now: dt.datetime) -> dt.datetime | None:
    paused_until = db.scalar(select(PaveAccount.paused_until)
                             .where(PaveAccount.id == ACCOUNT_ID))
    return paused_until if paused_until is not None and paused_until > now else None

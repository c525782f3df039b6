"""PAVE's push endpoint: a nudge to poll a session now, never a status to record."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from sqlalchemy.orm import Session, sessionmaker

from worker.accounts import ACCOUNT_NAME_PATTERN, DEFAULT_ACCOUNT
from worker.api import schemas
from worker.api.deps import (
    EnqueuePoll,
    EnqueuePollDep,
    SessionsDep,
    SettingsDep,
    bearer,
    push_token_first,
)
from worker.config import Settings
from worker.db import utcnow
from worker.tracking.push import lease_for_push

log = logging.getLogger(__name__)

router = APIRouter(tags=["pave"], route_class=push_token_first,
                   dependencies=[Depends(bearer)])


@router.post("/pave/callbacks", response_model=schemas.PushAccepted,
             responses={401: {"model": schemas.Problem}})
def pave_push(push: schemas.PavePush, settings: SettingsDep, sessions: SessionsDep,
              enqueue_poll: EnqueuePollDep) -> schemas.PushAccepted:
    """PAVE's SESSION:STATUS_CHANGE / SESSION:COMPLETE push for the `default` account:
    polls that session now.

    Accepted only with `Authorization: Bearer <PAVE_PUSH_TOKEN>`. The body is never
    recorded as truth: the status comes from the poll it starts.
    """
    return accept_push(DEFAULT_ACCOUNT, push, settings, sessions, enqueue_poll)


@router.post("/pave/callbacks/{account}", response_model=schemas.PushAccepted,
             responses={401: {"model": schemas.Problem}})
def pave_push_for_account(
    account: Annotated[str, Path(pattern=f"^{ACCOUNT_NAME_PATTERN}$")], push: schemas.PavePush,
    settings: SettingsDep, sessions: SessionsDep, enqueue_poll: EnqueuePollDep,
) -> schemas.PushAccepted:
    """PAVE's push for one account, with that account's push token: a token for one
    account cannot make another's sessions poll."""
    return accept_push(account, push, settings, sessions, enqueue_poll)


def accept_push(account: str, push: schemas.PavePush, settings: Settings,
                sessions: sessionmaker[Session], enqueue_poll: EnqueuePoll
                ) -> schemas.PushAccepted:
    with sessions.begin() as db:
        outcome, lease = lease_for_push(db=db, account=account,
                                        session_key=push.session_key, now=utcnow(),
                                        lease_seconds=settings.lease_seconds,
                                        autotrack=settings.push_autotrack)
    if lease is not None:  # committed: the lease is visible before the message is
        session_id, token = lease
        enqueue_poll([session_id], token)
    log.info("PAVE push %s for %s (account %s): %s", push.event[:40], push.session_key,
             account, outcome.value, extra={"account": account})
    return schemas.PushAccepted(session_key=push.session_key, outcome=outcome.value)

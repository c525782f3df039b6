"""Tracked sessions: track, list, show and untrack, as the CLI's commands of those names.

An account's token sees its own account's sessions only: another account's session
answers exactly as an unknown key does.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from worker.api import schemas
from worker.api.deps import (
    NEEDS_TOKEN,
    ScopeDep,
    SessionsDep,
    TokenScope,
    api_token_first,
    bearer,
)
from worker.api.paging import PAGE_SIZE, Limit, Offset, next_offset
from worker.db import utcnow
from worker.delivery import outbox
from worker.delivery.views import delivery_summary
from worker.errors import AccountConflict, BadInput
from worker.models import TrackedSession, Tracking
from worker.tracking import service
from worker.tracking.keys import SESSION_KEY_PATTERN
from worker.tracking.requests import TrackRequest
from worker.views import session_detail, session_summary

router = APIRouter(tags=["sessions"], route_class=api_token_first,
                   dependencies=[Depends(bearer)], responses=NEEDS_TOKEN)
KEY_IN_PATH = Path(pattern=f"^{SESSION_KEY_PATTERN.pattern}$", examples=["XXX-ABCDE12345"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.Problem}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": schemas.Problem, "description": "A key is tracked under another account"},
}


@router.post("/sessions", response_model=schemas.TrackResult, responses=CONFLICT)
def track(body: schemas.TrackOne | schemas.TrackBatch, sessions: SessionsDep,
          scope: ScopeDep) -> schemas.TrackResult:
    """Track one session or a batch; idempotent, like `pave-tracker track`."""
    items = body.sessions if isinstance(body, schemas.TrackBatch) else [body]
    batch = isinstance(body, schemas.TrackBatch)
    requests = [TrackRequest(item.session_key, dict(item.metadata),
                             account_for(scope, item.account,
                                         ["body", "sessions", number] if batch else ["body"]))
                for number, item in enumerate(items)]
    try:
        with sessions.begin() as db:
            summary = service.track_sessions(db=db, requests=requests, now=utcnow())
    except AccountConflict as exc:
        raise HTTPException(409, str(exc)) from None
    return schemas.TrackResult(**summary.__dict__)


def account_for(scope: TokenScope, account: str | None, where: list[str | int]) -> str:
    """The account an item is tracked under; 422 for one the token does not see, worded
    as for one that does not exist. A token of one account may leave it out."""
    try:
        return scope.accounts.choose(account)
    except BadInput as exc:
        raise RequestValidationError([{"loc": [*where, "account"], "msg": str(exc),
                                       "type": "value_error"}]) from None


@router.get("/sessions", response_model=schemas.SessionPage)
def list_sessions(
    sessions: SessionsDep,
    scope: ScopeDep,
    tracking: Tracking | None = None,
    status: Annotated[str | None, Query(max_length=64)] = None,
    account: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = PAGE_SIZE,
    offset: Offset = 0,
) -> dict[str, Any]:
    # An account the token does not see lists nothing, as one that has no sessions.
    accounts = scope.only if account is None else [account] if scope.sees(account) else []
    dealer_names = scope.dealer_names
    with sessions.begin() as db:
        found = service.list_sessions(db=db, tracking=tracking, status=status,
                                      accounts=accounts, limit=limit + 1, offset=offset)
        page = [session_summary(t, dealer_name=dealer_names.get(t.account))
                for t in found[:limit]]
    return {"sessions": page, "next_offset": next_offset(found, limit=limit, offset=offset)}


@router.get("/sessions/{session_key}", response_model=schemas.SessionDetail,
            responses=NOT_FOUND)
def show(session_key: Annotated[str, KEY_IN_PATH], sessions: SessionsDep,
         scope: ScopeDep) -> dict[str, Any]:
    """The same object as `pave-tracker show KEY --json`."""
    with sessions.begin() as db:
        tracked = tracked_or_404(db, session_key, scope)
        history = service.session_history(db=db, session_id=tracked.id)
        deliveries = [delivery_summary(row) for row
                      in outbox.list_deliveries(db=db, session_id=tracked.id)]
        return session_detail(tracked, history, deliveries,
                              dealer_name=scope.dealer_names.get(tracked.account))


@router.delete("/sessions/{session_key}", response_model=schemas.Untracked,
               responses=NOT_FOUND)
def untrack(session_key: Annotated[str, KEY_IN_PATH], sessions: SessionsDep,
            scope: ScopeDep) -> schemas.Untracked:
    """Stop tracking, like `pave-tracker untrack`."""
    with sessions.begin() as db:
        tracked_or_404(db, session_key, scope)
        stopped = service.untrack_sessions(db=db, keys=[session_key], now=utcnow())
    return schemas.Untracked(session_key=session_key, stopped=bool(stopped))


def tracked_or_404(db: Session, session_key: str, scope: TokenScope) -> TrackedSession:
    """The session, if this token sees its account; the same 404 otherwise as for a key
    nobody tracks (one query either way)."""
    try:
        tracked = service.find_session(db=db, session_key=session_key)
    except BadInput as exc:
        raise HTTPException(404, str(exc)) from None
    if not scope.sees(tracked.account):
        raise HTTPException(404, f"not tracked: {session_key}")
    return tracked

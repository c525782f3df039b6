"""Tracked sessions: track, list, show and untrack, as the CLI's commands of those names."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from sqlalchemy.orm import Session

from worker.api import schemas
from worker.api.deps import NEEDS_TOKEN, SessionsDep, api_token_first, bearer
from worker.api.paging import PAGE_SIZE, Limit, Offset, next_offset
from worker.db import utcnow
from worker.delivery import outbox
from worker.delivery.views import delivery_summary
from worker.errors import BadInput
from worker.models import TrackedSession, Tracking
from worker.tracking import service
from worker.tracking.keys import SESSION_KEY_PATTERN
from worker.tracking.requests import TrackRequest
from worker.views import session_detail, session_summary

router = APIRouter(tags=["sessions"], route_class=api_token_first,
                   dependencies=[Depends(bearer)], responses=NEEDS_TOKEN)
KEY_IN_PATH = Path(pattern=f"^{SESSION_KEY_PATTERN.pattern}$", examples=["XXX-ABCDE12345"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.Problem}}


@router.post("/sessions", response_model=schemas.TrackResult)
def track(body: schemas.TrackOne | schemas.TrackBatch,
          sessions: SessionsDep) -> schemas.TrackResult:
    """Track one session or a batch; idempotent, like `pave-tracker track`."""
    items = body.sessions if isinstance(body, schemas.TrackBatch) else [body]
    with sessions.begin() as db:
        summary = service.track_sessions(
            db=db, requests=[TrackRequest(item.session_key, dict(item.metadata))
                             for item in items], now=utcnow())
    return schemas.TrackResult(**summary.__dict__)


@router.get("/sessions", response_model=schemas.SessionPage)
def list_sessions(
    sessions: SessionsDep,
    tracking: Tracking | None = None,
    status: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = PAGE_SIZE,
    offset: Offset = 0,
) -> dict[str, Any]:
    with sessions.begin() as db:
        found = service.list_sessions(db=db, tracking=tracking, status=status,
                                      limit=limit + 1, offset=offset)
        page = [session_summary(t) for t in found[:limit]]
    return {"sessions": page, "next_offset": next_offset(found, limit=limit, offset=offset)}


@router.get("/sessions/{session_key}", response_model=schemas.SessionDetail,
            responses=NOT_FOUND)
def show(session_key: Annotated[str, KEY_IN_PATH], sessions: SessionsDep) -> dict[str, Any]:
    """The same object as `pave-tracker show KEY --json`."""
    with sessions.begin() as db:
        tracked = tracked_or_404(db, session_key)
        history = service.session_history(db=db, session_id=tracked.id)
        deliveries = [delivery_summary(d, e, k) for d, e, k
                      in outbox.list_deliveries(db=db, session_id=tracked.id)]
        return session_detail(tracked, history, deliveries)


@router.delete("/sessions/{session_key}", response_model=schemas.Untracked,
               responses=NOT_FOUND)
def untrack(session_key: Annotated[str, KEY_IN_PATH],
            sessions: SessionsDep) -> schemas.Untracked:
    """Stop tracking, like `pave-tracker untrack`."""
    with sessions.begin() as db:
        tracked_or_404(db, session_key)
        stopped = service.untrack_sessions(db=db, keys=[session_key], now=utcnow())
    return schemas.Untracked(session_key=session_key, stopped=bool(stopped))


def tracked_or_404(db: Session, session_key: str) -> TrackedSession:
    try:
        return service.find_session(db=db, session_key=session_key)
    except BadInput as exc:
        raise HTTPException(404, str(exc)) from None

"""The outbox: what was sent to which target, and replaying a delivery."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path

from worker.api import schemas
from worker.api.deps import NEEDS_TOKEN, ScopeDep, SessionsDep, api_token_first, bearer
from worker.api.paging import PAGE_SIZE, Limit, Offset, next_offset
from worker.db import utcnow
from worker.delivery import outbox
from worker.delivery.views import DELIVERY_ID, delivery_detail
from worker.errors import BadInput
from worker.models import DeliveryState

router = APIRouter(tags=["deliveries"], route_class=api_token_first,
                   dependencies=[Depends(bearer)], responses=NEEDS_TOKEN)


@router.get("/deliveries", response_model=schemas.DeliveryPage)
def deliveries(
    sessions: SessionsDep,
    scope: ScopeDep,
    state: DeliveryState | None = None,
    limit: Limit = PAGE_SIZE,
    offset: Offset = 0,
) -> dict[str, Any]:
    with sessions.begin() as db:
        found = outbox.list_deliveries(db=db, state=state, accounts=scope.only,
                                       limit=limit + 1, offset=offset)
        page = [delivery_detail(row) for row in found[:limit]]
    return {"deliveries": page, "next_offset": next_offset(found, limit=limit, offset=offset)}


@router.post("/deliveries/{delivery_id}/replay", response_model=schemas.Replayed,
             responses={404: {"model": schemas.Problem}})
def replay_delivery(
    delivery_id: Annotated[str, Path(pattern=f"^{DELIVERY_ID.pattern}$")],
    sessions: SessionsDep,
    scope: ScopeDep,
) -> schemas.Replayed:
    """Deliver again from the start of the retry schedule, under the same id. Another
    account's delivery is, to an account's token, no such delivery."""
    try:
        with sessions.begin() as db:
            replayed = outbox.replay_deliveries(db=db, ids=[delivery_id], all_dead=False,
                                                now=utcnow(), accounts=scope.only)
    except BadInput as exc:
        raise HTTPException(404, str(exc)) from None
    return schemas.Replayed(id=delivery_id, replayed=replayed)

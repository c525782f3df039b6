"""For whoever runs the service: is it up, and its Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.api import schemas
from worker.api.deps import NEEDS_TOKEN, ScopeDep, api_token_first, bearer

public = APIRouter(tags=["operations"])
router = APIRouter(tags=["operations"], route_class=api_token_first,
                   dependencies=[Depends(bearer)], responses=NEEDS_TOKEN)


@public.get("/healthz", response_model=schemas.Health)
def healthz() -> schemas.Health:
    return schemas.Health(status="ok")


@router.get("/metrics", response_class=Response,
            responses={403: {"model": schemas.Problem}})
def metrics(scope: ScopeDep) -> Response:
    if not scope.everything:  # every account's numbers: not for one account's token
        raise HTTPException(403, "needs a token from API_TOKENS")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

"""For whoever runs the service: is it up, and its Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.api import schemas
from worker.api.deps import NEEDS_TOKEN, require_api_token

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=schemas.Health)
def healthz() -> schemas.Health:
    return schemas.Health(status="ok")


@router.get("/metrics", dependencies=[Depends(require_api_token)], responses=NEEDS_TOKEN,
            response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

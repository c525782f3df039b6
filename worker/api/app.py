"""`pave-tracker serve`: the HTTP API for dealers' systems, and PAVE's push endpoint.

Every endpoint but /healthz and /pave/callbacks wants `Authorization: Bearer <token>`
with one of API_TOKENS. Bad requests get a 4xx whose body says what was wrong; request
bodies are bounded (MAX_BODY_BYTES) and so are batches (MAX_BATCH sessions).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from worker.api import schemas
from worker.config import Settings
from worker.db import utcnow
from worker.delivery import outbox
from worker.delivery.views import DELIVERY_ID, delivery_detail, delivery_summary
from worker.errors import BadInput
from worker.models import DeliveryState, Tracking
from worker.tracking import service
from worker.tracking.keys import SESSION_KEY_PATTERN
from worker.tracking.push import lease_for_push
from worker.tracking.requests import TrackRequest
from worker.views import session_detail, session_summary

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
PAGE_SIZE = 100
EnqueuePoll = Callable[[list[int], str], None]
bearer = HTTPBearer(auto_error=False)
KEY_IN_PATH = Path(pattern=f"^{SESSION_KEY_PATTERN.pattern}$", examples=["XXX-ABCDE12345"])
NEEDS_TOKEN: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.Problem, "description": "Missing or unknown bearer token"},
}


def token_matches(credentials: HTTPAuthorizationCredentials | None,
                  tokens: tuple[SecretStr, ...]) -> bool:
    if credentials is None or credentials.scheme.lower() != "bearer":
        return False
    offered = credentials.credentials.encode()
    # compare_digest against every token, so timing says nothing about which matched.
    matches = [hmac.compare_digest(offered, token.get_secret_value().encode())
               for token in tokens]
    return any(matches)


def create_app(*, settings: Settings, sessions: sessionmaker[Session],
               enqueue_poll: EnqueuePoll) -> FastAPI:
    app = FastAPI(
        title="pave-tracker",
        version="1",
        description="Track PAVE inspection sessions; see the README for events and webhooks.",
    )

    def api_token(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(bearer)]) -> None:
        if not token_matches(credentials, settings.api_tokens):
            raise HTTPException(401, "missing or unknown bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    authorised = [Depends(api_token)]

    @app.middleware("http")
    async def bounded_body(request: Request,
                           call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"},
                                status_code=413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def unprocessable(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")}
                  for e in exc.errors()[:20]]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(SQLAlchemyError)
    async def database_down(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.error("database error while serving %s: %s", request.url.path,
                  type(exc).__name__)
        return JSONResponse({"detail": "the database is unavailable"}, status_code=503)

    @app.get("/healthz", response_model=schemas.Health, tags=["operations"])
    def healthz() -> schemas.Health:
        return schemas.Health(status="ok")

    @app.get("/metrics", dependencies=authorised, responses=NEEDS_TOKEN,
             response_class=Response, tags=["operations"])
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/sessions", dependencies=authorised, response_model=schemas.TrackResult,
              responses=NEEDS_TOKEN, tags=["sessions"])
    def track(body: schemas.TrackOne | schemas.TrackBatch) -> schemas.TrackResult:
        """Track one session or a batch; idempotent, like `pave-tracker track`."""
        items = body.sessions if isinstance(body, schemas.TrackBatch) else [body]
        with sessions.begin() as db:
            summary = service.track_sessions(
                db=db, requests=[TrackRequest(item.session_key, dict(item.metadata))
                                 for item in items], now=utcnow())
        return schemas.TrackResult(**summary.__dict__)

    @app.get("/sessions", dependencies=authorised, response_model=schemas.SessionPage,
             responses=NEEDS_TOKEN, tags=["sessions"])
    def list_sessions(
        tracking: Tracking | None = None,
        status: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = PAGE_SIZE,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        with sessions.begin() as db:
            found = service.list_sessions(db=db, tracking=tracking, status=status,
                                          limit=limit + 1, offset=offset)
            page = [session_summary(t) for t in found[:limit]]
        return {"sessions": page,
                "next_offset": offset + limit if len(found) > limit else None}

    @app.get("/sessions/{session_key}", dependencies=authorised,
             response_model=schemas.SessionDetail, tags=["sessions"],
             responses={**NEEDS_TOKEN, 404: {"model": schemas.Problem}})
    def show(session_key: Annotated[str, KEY_IN_PATH]) -> dict[str, Any]:
        """The same object as `pave-tracker show KEY --json`."""
        with sessions.begin() as db:
            tracked = tracked_or_404(db, session_key)
            history = service.session_history(db=db, session_id=tracked.id)
            deliveries = [delivery_summary(d, e, k) for d, e, k
                          in outbox.list_deliveries(db=db, session_id=tracked.id)]
            return session_detail(tracked, history, deliveries)

    @app.delete("/sessions/{session_key}", dependencies=authorised,
                response_model=schemas.Untracked, tags=["sessions"],
                responses={**NEEDS_TOKEN, 404: {"model": schemas.Problem}})
    def untrack(session_key: Annotated[str, KEY_IN_PATH]) -> schemas.Untracked:
        """Stop tracking, like `pave-tracker untrack`."""
        with sessions.begin() as db:
            tracked_or_404(db, session_key)
            stopped = service.untrack_sessions(db=db, keys=[session_key], now=utcnow())
        return schemas.Untracked(session_key=session_key, stopped=bool(stopped))

    @app.get("/deliveries", dependencies=authorised, response_model=schemas.DeliveryPage,
             responses=NEEDS_TOKEN, tags=["deliveries"])
    def deliveries(
        state: DeliveryState | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = PAGE_SIZE,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        with sessions.begin() as db:
            found = outbox.list_deliveries(db=db, state=state, limit=limit + 1,
                                           offset=offset)
            page = [delivery_detail(d, e, k) for d, e, k in found[:limit]]
        return {"deliveries": page,
                "next_offset": offset + limit if len(found) > limit else None}

    @app.post("/deliveries/{delivery_id}/replay", dependencies=authorised,
              response_model=schemas.Replayed, tags=["deliveries"],
              responses={**NEEDS_TOKEN, 404: {"model": schemas.Problem}})
    def replay_delivery(
        delivery_id: Annotated[str, Path(pattern=f"^{DELIVERY_ID.pattern}$")],
    ) -> schemas.Replayed:
        """Deliver again from the start of the retry schedule, under the same id."""
        try:
            with sessions.begin() as db:
                replayed = outbox.replay_deliveries(db=db, ids=[delivery_id], all_dead=False,
                                                    now=utcnow())
        except BadInput as exc:
            raise HTTPException(404, str(exc)) from None
        return schemas.Replayed(id=delivery_id, replayed=replayed)

    @app.post("/pave/callbacks", response_model=schemas.PushAccepted, tags=["pave"],
              responses={401: {"model": schemas.Problem}})
    def pave_push(push: schemas.PavePush,
                  credentials: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(bearer)]) -> schemas.PushAccepted:
        """PAVE's SESSION:STATUS_CHANGE / SESSION:COMPLETE push: polls that session now.

        Accepted only with `Authorization: Bearer <PAVE_PUSH_TOKEN>`. The body is never
        recorded as truth: the status comes from the poll it starts.
        """
        push_tokens = (settings.pave_push_token,) if settings.pave_push_token else ()
        if not token_matches(credentials, push_tokens):
            raise HTTPException(401, "missing or unknown push token",
                                headers={"WWW-Authenticate": "Bearer"})
        with sessions.begin() as db:
            outcome, lease = lease_for_push(db=db, session_key=push.session_key, now=utcnow(),
                                            lease_seconds=settings.lease_seconds,
                                            autotrack=settings.push_autotrack)
        if lease is not None:  # committed: the lease is visible before the message is
            session_id, token = lease
            enqueue_poll([session_id], token)
        log.info("PAVE push %s for %s: %s", push.event[:40], push.session_key, outcome.value)
        return schemas.PushAccepted(session_key=push.session_key, outcome=outcome.value)

    def tracked_or_404(db: Session, session_key: str) -> Any:
        try:
            return service.find_session(db=db, session_key=session_key)
        except BadInput as exc:
            raise HTTPException(404, str(exc)) from None

    return app


"""`pave-tracker serve`: the HTTP API for dealers' systems, and PAVE's push endpoint.

Every endpoint but /healthz and /pave/callbacks wants `Authorization: Bearer <token>`
with one of API_TOKENS (every account) or of an account's `api_tokens` (that account
only: another account's sessions and deliveries answer 404, as unknown ones do). Bad
requests get a 4xx whose body says what was wrong; request bodies are bounded
(MAX_BODY_BYTES, chunked ones too) and so are batches (MAX_BATCH sessions).

    app.py         create_app: the app, its state, routers, handlers and body limit
    deps.py        what routes depend on: settings, sessions, enqueue_poll, token checks
    handlers.py    the answers to errors the routes let through
    body_limit.py  the ASGI middleware that bounds request bodies
    paging.py      `limit` and `offset` for the list endpoints
    schemas.py     request and response bodies
    routes/        one router per area: operations, sessions, deliveries, pave
"""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from worker.accounts import Accounts, load_accounts
from worker.api.body_limit import BodyLimit
from worker.api.deps import EnqueuePoll
from worker.api.handlers import add_exception_handlers
from worker.api.routes import deliveries, operations, pave
from worker.api.routes import sessions as session_routes
from worker.config import Settings

MAX_BODY_BYTES = 1_000_000


def create_app(*, settings: Settings, sessions: sessionmaker[Session],
               enqueue_poll: EnqueuePoll, accounts: Accounts | None = None) -> FastAPI:
    app = FastAPI(
        title="pave-tracker",
        version="1",
        description="Track PAVE inspection sessions; see the README for events and webhooks.",
    )
    # Read back by the dependencies in deps.py, so routes take them as parameters.
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.enqueue_poll = enqueue_poll
    app.state.accounts = accounts if accounts is not None else load_accounts(settings)
    app.include_router(operations.public)
    app.include_router(operations.router)
    app.include_router(session_routes.router)
    app.include_router(deliveries.router)
    app.include_router(pave.router)
    add_exception_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    return app


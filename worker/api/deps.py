"""What the routes depend on: create_app's arguments, kept on `app.state`, and the two
bearer-token checks (https://fastapi.tiangolo.com/tutorial/dependencies/).

The getters are `async` though nothing in them waits: FastAPI runs a plain `def`
dependency in its thread pool, a hop per request for reading an attribute.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from worker.api import schemas
from worker.config import Settings

EnqueuePoll = Callable[[list[int], str], None]
bearer = HTTPBearer(auto_error=False)
NEEDS_TOKEN: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.Problem, "description": "Missing or unknown bearer token"},
}


async def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def app_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


async def app_enqueue_poll(request: Request) -> EnqueuePoll:
    enqueue_poll: EnqueuePoll = request.app.state.enqueue_poll
    return enqueue_poll


SettingsDep = Annotated[Settings, Depends(app_settings)]
SessionsDep = Annotated[sessionmaker[Session], Depends(app_sessions)]
EnqueuePollDep = Annotated[EnqueuePoll, Depends(app_enqueue_poll)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def token_matches(credentials: HTTPAuthorizationCredentials | None,
                  tokens: tuple[SecretStr, ...]) -> bool:
    if credentials is None or credentials.scheme.lower() != "bearer":
        return False
    offered = credentials.credentials.encode()
    # compare_digest against every token, so timing says nothing about which matched.
    matches = [hmac.compare_digest(offered, token.get_secret_value().encode())
               for token in tokens]
    return any(matches)


def unauthorised(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def require_api_token(settings: SettingsDep, credentials: Credentials) -> None:
    """One of API_TOKENS: every endpoint but /healthz and /pave/callbacks."""
    if not token_matches(credentials, settings.api_tokens):
        raise unauthorised("missing or unknown bearer token")


async def require_push_token(settings: SettingsDep, credentials: Credentials) -> None:
    """PAVE_PUSH_TOKEN, and never an API token: /pave/callbacks only."""
    push_tokens = (settings.pave_push_token,) if settings.pave_push_token else ()
    if not token_matches(credentials, push_tokens):
        raise unauthorised("missing or unknown push token")

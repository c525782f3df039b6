"""What the routes depend on: create_app's arguments, kept on `app.state`, and the two
bearer-token checks (https://fastapi.tiangolo.com/tutorial/dependencies/).

The token is checked before the body is read: FastAPI reads and parses a route's body
before it solves the route's dependencies, so a dependency alone would let anyone make
the API parse a megabyte (and answer 422, telling them the route exists) without a token.
Routers that need a token take `route_class=api_token_first` (or `push_token_first`),
which checks it as the request arrives; the `bearer` dependency beside it only marks the
routes as secured in /openapi.json.

The getters are `async` though nothing in them waits: FastAPI runs a plain `def`
dependency in its thread pool, a hop per request for reading an attribute.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute
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


def check_api_token(settings: Settings, credentials: HTTPAuthorizationCredentials | None
                    ) -> None:
    """One of API_TOKENS: every endpoint but /healthz and /pave/callbacks."""
    if not token_matches(credentials, settings.api_tokens):
        raise unauthorised("missing or unknown bearer token")


def check_push_token(settings: Settings, credentials: HTTPAuthorizationCredentials | None
                     ) -> None:
    """PAVE_PUSH_TOKEN, and never an API token: /pave/callbacks only."""
    push_tokens = (settings.pave_push_token,) if settings.pave_push_token else ()
    if not token_matches(credentials, push_tokens):
        raise unauthorised("missing or unknown push token")


TokenCheck = Callable[[Settings, HTTPAuthorizationCredentials | None], None]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def token_first(check: TokenCheck) -> type[APIRoute]:
    """A route class whose routes run `check` on the bearer token before anything else,
    the body included (https://fastapi.tiangolo.com/how-to/custom-request-and-route/)."""

    class TokenFirstRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handle: Handler = super().get_route_handler()

            async def check_then_handle(request: Request) -> Response:
                check(request.app.state.settings, await bearer(request))
                return await handle(request)

            return check_then_handle

    return TokenFirstRoute


api_token_first = token_first(check_api_token)
push_token_first = token_first(check_push_token)

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
import secrets
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from worker.accounts import DEFAULT_ACCOUNT, Account, Accounts
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
    return matching_token(credentials, tokens) is not None


def matching_token(credentials: HTTPAuthorizationCredentials | None,
                   tokens: Sequence[SecretStr]) -> int | None:
    """Which of `tokens` the bearer credentials carry (its index), if any."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        return None
    offered = credentials.credentials.encode()
    # compare_digest against every token, so timing says nothing about which matched.
    matches = [hmac.compare_digest(offered, token.get_secret_value().encode())
               for token in tokens]
    return matches.index(True) if any(matches) else None


def unauthorised(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class TokenScope:
    """What a request's API token may see: everything (a token from API_TOKENS, which
    sees the sessions of an account since taken out of the settings too), or the one
    account whose `api_tokens` hold it. Anything of another account does not exist for
    it: 404, as an unknown key."""

    accounts: Accounts
    everything: bool

    @property
    def only(self) -> list[str] | None:
        """The accounts to keep in a listing; None: every one."""
        return None if self.everything else self.accounts.names

    def sees(self, account: str) -> bool:
        return self.everything or self.accounts.get(account) is not None

    @property
    def dealer_names(self) -> dict[str, str | None]:
        return self.accounts.dealer_names


def check_api_token(request: Request, credentials: HTTPAuthorizationCredentials | None
                    ) -> None:
    """A token from API_TOKENS (every account) or from an account's `api_tokens` (that
    account): every endpoint but /healthz and /pave/callbacks."""
    settings: Settings = request.app.state.settings
    accounts: Accounts = request.app.state.accounts
    owners: list[Account | None] = [None] * len(settings.api_tokens)
    tokens = list(settings.api_tokens)
    for account in accounts:
        owners += [account] * len(account.api_tokens)
        tokens += account.api_tokens
    index = matching_token(credentials, tokens)
    if index is None:
        raise unauthorised("missing or unknown bearer token")
    owner = owners[index]
    request.state.scope = (TokenScope(accounts, everything=True) if owner is None
                           else TokenScope(Accounts((owner,)), everything=False))


NOBODYS_TOKEN = SecretStr(secrets.token_urlsafe(32))


def check_push_token(request: Request, credentials: HTTPAuthorizationCredentials | None
                     ) -> None:
    """The push token of the account in the path (`default` at /pave/callbacks), and
    never an API token. An unknown account is refused exactly as a wrong token is."""
    accounts: Accounts = request.app.state.accounts
    account = accounts.get(request.path_params.get("account", DEFAULT_ACCOUNT))
    # An account with no push token, or none by that name, is compared against a token
    # nobody holds: the same work, so timing does not tell which accounts exist.
    push_token = account.push_token if account and account.push_token else NOBODYS_TOKEN
    if not token_matches(credentials, (push_token,)) or push_token is NOBODYS_TOKEN:
        raise unauthorised("missing or unknown push token")


TokenCheck = Callable[[Request, HTTPAuthorizationCredentials | None], None]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def token_first(check: TokenCheck) -> type[APIRoute]:
    """A route class whose routes run `check` on the bearer token before anything else,
    the body included (https://fastapi.tiangolo.com/how-to/custom-request-and-route/)."""

    class TokenFirstRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handle: Handler = super().get_route_handler()

            async def check_then_handle(request: Request) -> Response:
                check(request, await bearer(request))
                return await handle(request)

            return check_then_handle

    return TokenFirstRoute


api_token_first = token_first(check_api_token)
push_token_first = token_first(check_push_token)


async def token_scope(request: Request) -> TokenScope:
    """The scope `check_api_token` found for this request's token."""
    scope: TokenScope = request.state.scope
    return scope


async def app_accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


ScopeDep = Annotated[TokenScope, Depends(token_scope)]
AccountsDep = Annotated[Accounts, Depends(app_accounts)]

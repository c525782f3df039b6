"""PAVE's request authentication: `API-Key`, `API-Token`, `API-Timestamp` on every call.

`API-Token` is the lowercase hex HMAC-SHA256 of "{username}:{api_key}@{timestamp}" keyed
with the account's API secret, where the timestamp is exactly the `API-Timestamp` string
(`pave/README.md`). A signed token expires within minutes, so one is made per request;
an integration that holds a static token per account sends that instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

from pydantic import SecretStr

from worker.accounts import Account

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(TIMESTAMP_FORMAT)


def sign_token(*, username: str, api_key: str, api_secret: str, timestamp: str) -> str:
    message = f"{username}:{api_key}@{timestamp}".encode()
    return hmac.new(api_secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, repr=False)
class PaveCredentials:
    """Either `username` + `api_secret` (signed per request) or a static `api_token`."""

    api_key: str
    username: str | None = None
    api_secret: str | None = None
    api_token: str | None = None

    def __repr__(self) -> str:
        return "PaveCredentials(<hidden>)"

    def headers(self, now: dt.datetime) -> dict[str, str]:
        timestamp = format_timestamp(now)
        if self.username and self.api_secret:
            token = sign_token(
                username=self.username,
                api_key=self.api_key,
                api_secret=self.api_secret,
                timestamp=timestamp,
            )
        else:
            token = self.api_token or ""
        return {"API-Key": self.api_key, "API-Token": token, "API-Timestamp": timestamp}


def credentials_from(account: Account) -> PaveCredentials:
    """The account's credentials as the settings hold them."""
    return PaveCredentials(
        api_key=_reveal(account.api_key) or "",
        username=account.username,
        api_secret=_reveal(account.api_secret),
        api_token=_reveal(account.api_token),
    )


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None

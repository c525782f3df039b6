"""Registering this tracker with PAVE's own push notifications (`/v1/callbacks`).

PAVE sets callbacks per API key, one per event, each with a URL and custom headers it
sends with every push; we ask for the account's push token (PAVE_PUSH_TOKEN for
`default`) as a bearer token, since PAVE documents no signature. The registration body
beyond `event`, `url` and `headers` is not documented.
"""

from __future__ import annotations

import datetime as dt

import httpx

from worker.accounts import Account
from worker.config import Settings
from worker.errors import PaveTrackerError
from worker.pave.auth import credentials_from
from worker.pave.client import raise_for_pave_status

PUSH_EVENTS = ("SESSION:STATUS_CHANGE", "SESSION:COMPLETE")


def register_push_callbacks(settings: Settings, account: Account,
                            url: str) -> list[tuple[str, str]]:
    """Create each callback, or update it when PAVE already has one for the event."""
    if account.push_token is None:
        raise PaveTrackerError(f"account {account.name!r} has no push token")
    headers = {"Authorization": f"Bearer {account.push_token.get_secret_value()}"}
    credentials = credentials_from(account)
    done: list[tuple[str, str]] = []
    try:
        with httpx.Client(base_url=account.api_url + "/",
                          timeout=settings.pave_timeout) as client:
            for event in PUSH_EVENTS:
                body = {"event": event, "url": url, "headers": headers}
                response = client.post("callbacks", json=body,
                                       headers=credentials.headers(dt.datetime.now(dt.UTC)))
                how = "registered"
                if response.status_code == 409:  # PAVE has one for this event: replace it
                    response = client.put(f"callbacks/{event}", json=body,
                                          headers=credentials.headers(dt.datetime.now(dt.UTC)))
                    how = "updated"
                raise_for_pave_status(response)
                done.append((event, how))
    except httpx.HTTPError as exc:
        raise PaveTrackerError(f"PAVE did not answer: {type(exc).__name__}: {exc}") from None
    return done

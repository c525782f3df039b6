"""Every exception the project raises on purpose, named for what went wrong.

    PaveTrackerError
    ├── BadInput                  bad input from a user: CLI argument, CSV file, key (exit 2)
    │   ├── SettingsError         a setting that cannot be used (exit 2)
    │   └── AccountConflict       a key already tracked under another account (exit 2, 409)
    ├── SchemaOutOfDate           the database needs `pave-tracker db upgrade`
    ├── TemplateFailed            a target's template cannot make its message
    │   └── LeadIncomplete        a session's data cannot make a valid ADF lead
    ├── HookNotFound              a hook target names nothing callable
    └── PaveError                 a poll that did not give a usable session
        ├── PaveNotFound          404: PAVE does not know the key (yet)
        ├── PaveAuthError         401/403: the credentials are wrong
        │   └── AccountNotConfigured  a session's account is not in the settings
        ├── PaveRateLimited       429: slow down, `retry_after` seconds if PAVE said so
        ├── PaveServerError       5xx, or any other unexpected HTTP status
        ├── PaveTransportError    no answer: connection refused, timeout, reset
        └── PaveBadPayload        an answer that is not a session we can read
"""

from __future__ import annotations


class PaveTrackerError(Exception):
    pass


class BadInput(PaveTrackerError):
    pass


class SettingsError(BadInput):
    pass


class AccountConflict(BadInput):
    pass


class SchemaOutOfDate(PaveTrackerError):
    pass


class TemplateFailed(PaveTrackerError):
    pass


class LeadIncomplete(TemplateFailed):
    pass


class HookNotFound(PaveTrackerError):
    pass


class PaveError(PaveTrackerError):
    """A failed poll. `kind` is the short name recorded in `last_error` and metrics."""

    kind = "error"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code

    def describe(self) -> str:
        return f"{self.kind}: {self}"


class PaveNotFound(PaveError):
    kind = "not_found"


class PaveAuthError(PaveError):
    kind = "auth"


class AccountNotConfigured(PaveAuthError):
    """No credentials to ask with: the session's account was taken out of the settings."""


class PaveRateLimited(PaveError):
    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status_code=429)
        self.retry_after = retry_after


class PaveServerError(PaveError):
    kind = "server_error"


class PaveTransportError(PaveError):
    kind = "transport"


class PaveBadPayload(PaveError):
    kind = "bad_payload"

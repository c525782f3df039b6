"""Callback targets: where events go. Built by `worker.delivery.target_config`.

Five kinds, each with a unique `name` and the list of events it subscribes to:
webhook (Standard Webhooks signed POST), email (SMTP), crm (a POST whose JSON body is
the user's template), hook (a Python callable) and adf (an ADF/XML lead for a CRM).

Every kind has a `timeout`, in seconds. The defaults below are cut to LEASE_SECONDS / 2
when the targets are loaded, and a timeout set by hand must be shorter than
LEASE_SECONDS: an attempt still running when its lease runs out would be attempted again
by another worker meanwhile (see `worker.delivery.target_config`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    SecretStr,
    field_validator,
    model_validator,
)

from worker.accounts import ACCOUNT_NAME_PATTERN
from worker.addresses import is_one_email_address
from worker.config import DEFAULT_EVENTS, check_events, check_webhook_secret

TargetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]
AccountName = Annotated[str, Field(pattern=f"^{ACCOUNT_NAME_PATTERN}$")]


class _Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: TargetName
    events: list[str] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    # Only these accounts' events (SPEC, "Accounts"); None: every account's.
    accounts: list[AccountName] | None = Field(default=None, min_length=1)

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: list[str]) -> list[str]:
        return check_events(events)

    def wants(self, event_type: str, account: str) -> bool:
        return event_type in self.events and (self.accounts is None
                                              or account in self.accounts)


class WebhookTarget(_Target):
    kind: Literal["webhook"] = "webhook"
    url: AnyHttpUrl
    # Several during a rotation: each request is signed with every one of them.
    secrets: list[SecretStr] = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveFloat = 15.0

    @field_validator("secrets")
    @classmethod
    def _valid_secrets(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        for secret in secrets:
            check_webhook_secret(secret.get_secret_value())
        return secrets


class EmailTarget(_Target):
    kind: Literal["email"] = "email"
    # smtp://user:pass@host:port (plain), smtp+starttls://… (STARTTLS), smtps://… (TLS).
    smtp_url: SecretStr
    sender: str
    default_to: str | None = None
    subject_template: str | None = None
    text_template: str | None = None
    html_template: str | None = None
    ca_file: str | None = None
    timeout: PositiveFloat = 30.0

    @model_validator(mode="after")
    def _digest_has_an_address(self) -> EmailTarget:
        # A session's e-mail may go to its customer; an account's digest has none.
        if "account.digest" in self.events and not self.default_to:
            raise ValueError("account.digest goes to the dealer's own address: give `to` "
                             "(EMAIL_TO)")
        return self


class CrmTarget(_Target):
    kind: Literal["crm"] = "crm"
    url: AnyHttpUrl
    body_template: str
    auth_header: str = "Authorization"
    auth_value: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveFloat = 15.0


class HookTarget(_Target):
    kind: Literal["hook"] = "hook"
    # "package.module:function", or the name of an entry point in HOOK_ENTRY_POINT_GROUP.
    callable: str | None = None
    entry_point: str | None = None
    # How long the hook may run before the attempt counts as failed (`worker.delivery.hooks`).
    timeout: PositiveFloat = 15.0


class AdfTarget(_Target):
    """An ADF/XML lead for a dealer CRM (`worker.delivery.adf`): e-mailed to `to` (the
    CRM's lead address) from `from`, or POSTed to `url` as application/xml."""

    kind: Literal["adf"] = "adf"
    default_to: str | None = None
    sender: str | None = None
    smtp_url: SecretStr | None = None
    url: AnyHttpUrl | None = None
    interest: Literal["trade-in", "sell"] = "trade-in"
    headers: dict[str, str] = Field(default_factory=dict)
    auth_header: str = "Authorization"
    auth_value: SecretStr | None = None
    ca_file: str | None = None
    timeout: PositiveFloat = 30.0

    @field_validator("default_to", "sender")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        if value is not None and not is_one_email_address(value):
            raise ValueError("must be one e-mail address, like leads@crm.example")
        return value

    @field_validator("events")
    @classmethod
    def _session_events(cls, events: list[str]) -> list[str]:
        if "account.digest" in events:
            raise ValueError("an ADF lead is one session's vehicle and customer: "
                             "account.digest is not one")
        return events

    @model_validator(mode="after")
    def _somewhere_to_send(self) -> AdfTarget:
        if self.url is None and not (self.default_to and self.sender and self.smtp_url):
            raise ValueError("give to, from and smtp_url_env (default SMTP_URL) to e-mail "
                             "the lead, or url to POST it")
        return self


HOOK_ENTRY_POINT_GROUP = "pave_tracker.hooks"

Target = WebhookTarget | EmailTarget | CrmTarget | HookTarget | AdfTarget

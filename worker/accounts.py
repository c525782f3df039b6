"""The PAVE accounts one tracker polls: a dealer group's rooftops (SPEC, "Accounts").

The `PAVE_*` variables define the account named `default`, so a single-account
deployment changes nothing; `[[account]]` tables in `pave-tracker.toml` add more, their
secrets only through `*_env` variables. Each account has its own credentials, API URL,
rate limit, timezone, API tokens (which see that account only) and push token.

Read once per process, like the settings; a bad account stops the process at start
with the section named and never the secret.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from worker.config import Settings, check_http_url, check_token_length, get_settings
from worker.config_file import read_sections
from worker.errors import BadInput, SettingsError

DEFAULT_ACCOUNT = "default"
# The one rule for an account's name: settings, targets, the API and the simulator check it.
ACCOUNT_NAME_PATTERN = r"[a-z0-9_-]{1,32}"
ACCOUNT_NAME = re.compile(ACCOUNT_NAME_PATTERN)
# Never written in the file itself: only as `<name>_env`, the variable that holds it.
SECRETS = ("api_key", "api_secret", "api_token", "api_tokens", "push_token")


class Account(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    dealer_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    api_url: str
    api_key: SecretStr | None = None
    username: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    api_secret: SecretStr | None = None
    api_token: SecretStr | None = None
    rate_limit: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    timezone: str = "UTC"
    api_tokens: tuple[SecretStr, ...] = ()
    push_token: SecretStr | None = None

    def __repr__(self) -> str:
        return f"Account({self.name!r})"

    @property
    def has_credentials(self) -> bool:
        return self.api_key is not None and (
            (self.username is not None and self.api_secret is not None)
            or self.api_token is not None)

    @property
    def display_name(self) -> str:
        """The dealer's name where a person reads it, else the account's."""
        return self.dealer_name or self.name

    @field_validator("name")
    @classmethod
    def _name_form(cls, value: str) -> str:
        if not ACCOUNT_NAME.fullmatch(value):
            raise ValueError("1 to 32 of a-z, 0-9, - and _")
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA timezone name, such as America/Toronto") from None
        return value

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            for token in value:
                check_token_length(token.get_secret_value() if isinstance(token, SecretStr)
                                   else str(token))
        return value

    @field_validator("push_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_token_length(value.get_secret_value())
        return value


@dataclass(frozen=True)
class Accounts:
    """Every account of this tracker, in the order the settings give them."""

    accounts: tuple[Account, ...]

    def __iter__(self) -> Iterator[Account]:
        return iter(self.accounts)

    def __len__(self) -> int:
        return len(self.accounts)

    @property
    def names(self) -> list[str]:
        return [account.name for account in self.accounts]

    @property
    def dealer_names(self) -> dict[str, str | None]:
        return {account.name: account.dealer_name for account in self.accounts}

    @property
    def timezones(self) -> dict[str, str]:
        return {account.name: account.timezone for account in self.accounts}

    def get(self, name: str) -> Account | None:
        return next((account for account in self.accounts if account.name == name), None)

    def named(self, name: str) -> Account:
        """The account called `name`; BadInput naming the known ones otherwise."""
        account = self.get(name)
        if account is None:
            raise BadInput(f"unknown account {name[:40]!r}; accounts are "
                           f"{', '.join(self.names)}")
        return account

    def choose(self, name: str | None) -> str:
        """The account a request means: the one named, or with one account that one;
        with several, a name is required."""
        if name is not None:
            return self.named(name).name
        if len(self.accounts) == 1:
            return self.accounts[0].name
        raise BadInput(f"several accounts ({', '.join(self.names)}): say which one "
                       "(--account, an `account` column or field)")


def load_accounts(settings: Settings) -> Accounts:
    """`default` from the PAVE_* variables (when PAVE_API_KEY is set, or when no
    `[[account]]` is given), then each `[[account]]` of the TOML file."""
    sections = read_sections(settings, "account")
    accounts: list[Account] = []
    if sections and settings.pave_api_key is None:
        orphans = [name for name, value in (
            ("PAVE_USERNAME", settings.pave_username),
            ("PAVE_API_SECRET", settings.pave_api_secret),
            ("PAVE_API_TOKEN", settings.pave_api_token),
            ("PAVE_PUSH_TOKEN", settings.pave_push_token),
            ("PAVE_RATE_LIMIT", settings.pave_rate_limit)) if value is not None]
        if orphans:
            # Without a key there is no `default` account for them to belong to.
            raise SettingsError(f"bad setting {orphans[0]}: set PAVE_API_KEY too (the "
                                "`default` account), or drop it beside [[account]] tables")
    if settings.pave_api_key is not None or not sections:
        accounts.append(Account(
            name=DEFAULT_ACCOUNT, api_url=settings.pave_api_url,
            api_key=settings.pave_api_key, username=settings.pave_username,
            api_secret=settings.pave_api_secret, api_token=settings.pave_api_token,
            rate_limit=settings.pave_rate_limit, push_token=settings.pave_push_token,
        ))
    for section in sections:
        written = [key for key in SECRETS
                   if key in section.keys or f"{key}_file" in section.keys]
        if written:
            raise SettingsError(f"bad setting {section.label}: {written[0]} is a secret: "
                                f"write {written[0]}_env, the variable that holds it")
        account = _build_account(section.label, {"api_url": settings.pave_api_url,
                                                 **section.values})
        if not account.has_credentials:
            raise SettingsError(
                f"bad setting {section.label}: account {account.name!r} has no credentials: "
                "give api_key_env, and username with api_secret_env or api_token_env")
        if any(known.name == account.name for known in accounts):
            raise SettingsError(f"bad setting {section.label}: a second account named "
                                f"{account.name!r}" + (" (the PAVE_* variables define "
                                "'default')" if account.name == DEFAULT_ACCOUNT else ""))
        accounts.append(account)
    _no_token_twice(settings, accounts)
    return Accounts(tuple(accounts))


def _no_token_twice(settings: Settings, accounts: list[Account]) -> None:
    """A bearer token says whose data a request sees: one token, one owner."""
    owners: dict[str, str] = {}
    places = [("API_TOKENS", token) for token in settings.api_tokens]
    places += [(f"[[account]] {account.name!r} api_tokens", token)
               for account in accounts for token in account.api_tokens]
    places += [("PAVE_PUSH_TOKEN" if account.name == DEFAULT_ACCOUNT
                else f"[[account]] {account.name!r} push_token", account.push_token)
               for account in accounts if account.push_token is not None]
    for place, token in places:
        first = owners.setdefault(token.get_secret_value(), place)
        if first != place:
            raise SettingsError(f"bad setting PAVE_TRACKER_CONFIG: one token is in both "
                                f"{first} and {place}; give each its own")


def _build_account(label: str, values: dict[str, Any]) -> Account:
    if bool(values.get("username")) != bool(values.get("api_secret")):
        raise SettingsError(f"bad setting {label}: username and api_secret_env go together")
    try:
        return Account.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "account"
        message = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"bad setting {label}: {field}: {message}") from None


@lru_cache(maxsize=1)
def get_accounts() -> Accounts:
    return load_accounts(get_settings())

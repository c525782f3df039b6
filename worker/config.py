"""The one settings object. Nothing else in the project reads the environment.

Values come from environment variables and from a `.env` file in the working folder
(SPEC's Configuration table). A bad value is refused when the settings are loaded, with
a message that names the variable and never repeats the value (it may be a secret).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from worker.errors import SettingsError

EMBEDDED_DATABASE_URL = "sqlite:///pave-tracker.db"
EMBEDDED_BROKER_URL = "sqla+sqlite:///pave-tracker-broker.db"

DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?"
                      r"(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")
UNIT_SECONDS = (86400, 3600, 60, 1)


def parse_duration(value: object) -> object:
    """Seconds as a number, or written `2h`, `30m`, `1d`, `1h30m`, `45s` (SPEC: durations
    may be written so). Anything else is left for the number check to refuse. A regular
    expression rather than a package: the few that parse this are unmaintained."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    match = DURATION.fullmatch(text)
    if not text or match is None or not any(match.groups()) or text[-1].isdigit():
        return value
    return sum(float(part) * unit for part, unit in zip(match.groups(), UNIT_SECONDS,
                                                         strict=True) if part)


# Finite: "inf" seconds would overflow the first date computed from it.
Seconds = Annotated[float, BeforeValidator(parse_duration),
                    Field(gt=0, allow_inf_nan=False)]

# The events targets may subscribe to (SPEC's Events), checked here because WEBHOOK_EVENTS
# and EMAIL_EVENTS name them.
EVENT_TYPES = (
    "session.status_changed",
    "session.completed",
    "session.expired",
    "session.invalid",
    "tracking.not_found",
    "tracking.gave_up",
    "session.stalled",
    "session.reminder",
    "account.digest",
)
DEFAULT_EVENTS = ["session.completed"]
MIN_TOKEN_LENGTH = 16


def check_events(events: list[str]) -> list[str]:
    unknown = [event for event in events if event not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event {unknown[0]!r}; events are {', '.join(EVENT_TYPES)}")
    if not events:
        raise ValueError("needs at least one event")
    return events


def check_positive_durations(durations: Iterable[float]) -> None:
    """Finite and more than zero: "inf" would overflow the first date computed from it."""
    if any(not 0 < seconds < float("inf") for seconds in durations):
        raise ValueError("each duration must be more than zero seconds")


def check_http_url(url: str) -> str:
    """An http(s) URL, without its trailing slash."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return url.rstrip("/")


def check_token_length(token: str) -> str:
    """A bearer token long enough not to be guessed (API and push tokens alike)."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"needs at least {MIN_TOKEN_LENGTH} characters")
    return token


def check_webhook_secret(secret: str) -> str:
    """`whsec_` + base64 of 24 to 64 random bytes (Standard Webhooks)."""
    if not secret.startswith("whsec_"):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret holds 24 to 64 bytes")
    return secret


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # VAR= (as docker-compose passes an unset ${VAR:-}) means "not set": the default.
        env_ignore_empty=True,
    )

    pave_api_url: str = "https://openapi.paveapi.com/v1"
    pave_api_key: SecretStr | None = None
    pave_username: str | None = None
    pave_api_secret: SecretStr | None = None
    pave_api_token: SecretStr | None = None
    pave_timeout: Seconds = 10.0

    database_url: str = EMBEDDED_DATABASE_URL
    redis_url: str | None = None
    broker_url: str | None = None

    poll_interval: Seconds = 60.0
    poll_interval_idle: Seconds = 300.0
    not_found_grace: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 600.0
    poll_max_age: Seconds = 1_209_600.0
    terminal_statuses: Annotated[frozenset[str], NoDecode] = frozenset(
        {"COMPLETE", "EXPIRED", "INVALID"}
    )
    dispatch_interval: Seconds = 5.0
    lease_seconds: Seconds = 60.0

    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_events: Annotated[list[str], NoDecode] = ["session.completed"]
    smtp_url: SecretStr | None = None
    email_from: str | None = None
    email_to: str | None = None
    email_events: Annotated[list[str], NoDecode] = ["session.completed"]
    delivery_retry_schedule: Annotated[tuple[float, ...], NoDecode] = (
        5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400,
    )
    pave_tracker_config: str | None = None
    fetch_results: bool = False
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    # Loopback unless told otherwise: the metrics carry no secrets but have no auth either.
    metrics_host: str = "127.0.0.1"
    api_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    pave_push_token: SecretStr | None = None
    push_autotrack: bool = False
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error", "DEBUG", "INFO", "WARNING",
                       "ERROR"] = "info"

    # SPEC's "Nudges and digests": seconds in one status before it counts as stalled,
    # per status (`IDLE=1d,STARTED=2h`); empty: nothing stalls.
    stall_after: Annotated[dict[str, float], NoDecode] = {}
    # Seconds without progress before each customer reminder; empty: no reminders.
    remind_after: Annotated[tuple[float, ...], NoDecode] = ()
    remind_statuses: Annotated[frozenset[str], NoDecode] = frozenset(
        {"IDLE", "STARTED", "PROCESS", "CONFIRM"})
    # `21:00-08:00`: reminders falling due in this window of the account's local time
    # are sent when it ends. None: any time.
    quiet_hours: Annotated[tuple[dt.time, dt.time], NoDecode] | None = None
    # `07:30`: each account's local time for its daily `account.digest`. None: no digests.
    digest_at: Annotated[dt.time, NoDecode] | None = None

    # Not in SPEC's table: how the work is cut up. Documented in the README.
    dispatch_max: PositiveInt = 10_000
    poll_batch_size: PositiveInt = 100
    poll_concurrency: PositiveInt = 20
    error_backoff_cap: Seconds = 1800.0
    auth_pause: Seconds = 300.0
    max_unfinished_polls: PositiveInt = 5
    max_unfinished_attempts: PositiveInt = 5
    pave_rate_limit: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    rate_limit_pause: Seconds = 30.0
    delivery_batch_size: PositiveInt = 10

    @field_validator("terminal_statuses", "remind_statuses", mode="before")
    @classmethod
    def _split_statuses(cls, value: object) -> object:
        if isinstance(value, str):
            statuses = frozenset(part.strip().upper() for part in value.split(",") if part.strip())
            if not statuses:
                raise ValueError("needs at least one status")
            return statuses
        return value

    @field_validator("webhook_events", "email_events", mode="before")
    @classmethod
    def _split_events(cls, value: object) -> object:
        if isinstance(value, str):
            return check_events([part.strip() for part in value.split(",") if part.strip()])
        return value

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            tokens = tuple(part.strip() for part in value.split(",") if part.strip())
            for token in tokens:
                check_token_length(token)
            return tokens
        return value

    @field_validator("pave_push_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # As API_TOKENS: the push endpoint faces the internet.
        if value is not None:
            check_token_length(value.get_secret_value().strip())
        return value

    @field_validator("metrics_host")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        if value != "localhost":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError("must be an IP address to listen on, or localhost") from None
        return value

    @field_validator("stall_after", mode="before")
    @classmethod
    def _status_durations(cls, value: object) -> object:
        """`STATUS=duration` pairs, comma-separated; a duration as anywhere else."""
        if not isinstance(value, str):
            return value
        pairs: dict[str, float] = {}
        for part in (piece.strip() for piece in value.split(",") if piece.strip()):
            status, sep, duration = part.partition("=")
            status = status.strip().upper()
            if not sep or not status or len(status) > 64:
                raise ValueError(f"expected STATUS=duration pairs, like IDLE=1d, not "
                                 f"{part[:40]!r}")
            try:
                pairs[status] = float(str(parse_duration(duration.strip())))
            except ValueError:
                raise ValueError(f"{status}: not a duration (seconds, or like 2h, 30m, "
                                 "1d)") from None
        return pairs

    @field_validator("stall_after")
    @classmethod
    def _positive_durations(cls, value: dict[str, float]) -> dict[str, float]:
        check_positive_durations(value.values())
        return value

    @field_validator("quiet_hours", mode="before")
    @classmethod
    def _time_window(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        start, sep, end = value.partition("-")
        try:
            window = (dt.time.fromisoformat(start.strip()), dt.time.fromisoformat(end.strip()))
        except ValueError:
            window = None
        if not sep or window is None or window[0] == window[1]:
            raise ValueError("expected a window of local times, like 21:00-08:00")
        return window

    @field_validator("digest_at", mode="before")
    @classmethod
    def _time_of_day(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
        if match is None:
            raise ValueError("expected a local time of day, like 07:30")
        return dt.time(int(match[1]), int(match[2]))

    @field_validator("remind_after", mode="before")
    @classmethod
    def _split_reminders(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(parse_duration(part.strip()) for part in value.split(",")
                         if part.strip())
        return value

    @field_validator("remind_after")
    @classmethod
    def _growing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        check_positive_durations(value)
        if list(value) != sorted(set(value)):
            raise ValueError("each reminder comes after the one before: durations must grow")
        return value

    @field_validator("delivery_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if not parts:
                raise ValueError("needs at least one delay")
            return tuple(parse_duration(part) for part in parts)
        return value

    @field_validator("delivery_retry_schedule")
    @classmethod
    def _non_negative_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= delay < float("inf") for delay in value):
            raise ValueError("delays are seconds, zero or more")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_form(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for secret in value.get_secret_value().replace(",", " ").split():
                check_webhook_secret(secret)
        return value

    @field_validator("pave_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("database_url")
    @classmethod
    def _installed_driver(cls, value: str) -> str:
        """Map `postgres://` and `postgresql://` (Heroku, docker) onto psycopg 3."""
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("must be a SQLAlchemy URL such as sqlite:///file.db") from None
        if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
            # Pinned to the folder it was read in: every process then means the same file.
            return url.set(database=os.path.abspath(url.database)).render_as_string(
                hide_password=False
            )
        return value

    @model_validator(mode="after")
    def _credentials_complete(self) -> Settings:
        if bool(self.pave_username) != bool(self.pave_api_secret):
            raise ValueError("PAVE_USERNAME and PAVE_API_SECRET must be set together")
        if self.lease_seconds <= self.pave_timeout:
            raise ValueError("LEASE_SECONDS must be longer than PAVE_TIMEOUT")
        if self.webhook_url and not self.webhook_secret:
            raise ValueError("WEBHOOK_URL needs WEBHOOK_SECRET (whsec_…)")
        if self.email_from and not self.smtp_url:
            raise ValueError("EMAIL_FROM needs SMTP_URL")
        return self

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url or EMBEDDED_BROKER_URL

    @property
    def uses_embedded_broker(self) -> bool:
        return self.effective_broker_url.startswith("sqla+")


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one line that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = "_".join(str(part) for part in first["loc"]).upper()
        message = first["msg"].removeprefix("Value error, ")
        if variable:
            raise SettingsError(f"bad setting {variable}: {message}") from None
        raise SettingsError(f"bad settings: {message}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def environment_without_settings() -> dict[str, str]:
    """This process's environment minus every pave-tracker variable: the base for a child
    process (the demo's worker) that must see only the settings it is given."""
    ours = {name.upper() for name in Settings.model_fields} | {"PAVE_TRACKER_CONFIG"}
    return {name: value for name, value in os.environ.items() if name.upper() not in ours}


@dataclass(frozen=True)
class MetricsFolder:
    path: str
    made_here: bool  # ours to remove when the worker stops; an operator's own is kept


def use_multiprocess_metrics(settings: Settings) -> MetricsFolder | None:
    """With METRICS_PORT set, put prometheus_client in multiprocess mode; returns its folder.

    prometheus_client decides its mode from PROMETHEUS_MULTIPROC_DIR when it is first
    imported, so a worker calls this as it starts, before any metric exists. An
    operator's own folder is kept; otherwise a fresh one is made, since stale files from
    an earlier run would count.
    """
    if settings.metrics_port is None:
        return None
    if folder := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return MetricsFolder(folder, made_here=False)
    folder = tempfile.mkdtemp(prefix="pave-tracker-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return MetricsFolder(folder, made_here=True)

"""The one settings object. Nothing else in the project reads the environment.

Values come from environment variables and from a `.env` file in the working folder
(SPEC's Configuration table). A bad value is refused when the settings are loaded, with
a message that names the variable and never repeats the value (it may be a secret).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated

from pydantic import (
    Field,
    PositiveFloat,
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

Seconds = PositiveFloat


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
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
    not_found_grace: Annotated[float, Field(ge=0)] = 600.0
    poll_max_age: Seconds = 1_209_600.0
    terminal_statuses: Annotated[frozenset[str], NoDecode] = frozenset(
        {"COMPLETE", "EXPIRED", "INVALID"}
    )
    dispatch_interval: Seconds = 5.0
    lease_seconds: Seconds = 60.0

    # Not in SPEC's table: how the work is cut up. Documented in the README.
    dispatch_max: PositiveInt = 10_000
    poll_batch_size: PositiveInt = 50
    poll_concurrency: PositiveInt = 20
    error_backoff_cap: Seconds = 1800.0

    @field_validator("terminal_statuses", mode="before")
    @classmethod
    def _split_statuses(cls, value: object) -> object:
        if isinstance(value, str):
            statuses = frozenset(part.strip().upper() for part in value.split(",") if part.strip())
            if not statuses:
                raise ValueError("needs at least one status")
            return statuses
        return value

    @field_validator("pave_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

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

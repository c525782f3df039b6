"""Shared fixtures. Real services: SQLite files, PostgreSQL, Redis, the simulator on loopback.

PostgreSQL and Redis come from TEST_DATABASE_URL and TEST_REDIS_URL (defaults: the
local servers, database `pave_tracker_test`, Redis database 15). When one cannot be
reached its tests are skipped, unless REQUIRE_SERVICES=1 (CI), which fails them.
Nothing started here outlives its test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.db import engine_for, session_factory
from worker.pave.simulator import Simulator, running_simulator
from worker.processes import stop_process_group
from worker.schema import upgrade_database

PG_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/pave_tracker_test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"

SIM_CREDENTIALS = {
    "pave_api_key": "sim-api-key",
    "pave_username": "sim-user",
    "pave_api_secret": "sim-api-secret",
}


def unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def require_local_services(redis_url: str, what: str) -> None:
    """For scripts that run their own services' databases (benchmark, overload): the
    local PostgreSQL and this Redis must answer."""
    import psycopg

    try:
        psycopg.connect("postgresql://postgres@127.0.0.1/postgres", connect_timeout=3).close()
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except (psycopg.Error, redis.RedisError) as exc:
        unavailable(f"{what} needs local PostgreSQL and Redis: {exc}")


@pytest.fixture(autouse=True)
def open_gates() -> Iterator[None]:
    """A gate a test closed (a 401 or 429 in this process) stays closed for its pause:
    no later test inherits it."""
    from worker.pave.gate import forget_gates

    yield
    forget_gates()


@pytest.fixture
def settings_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The process's own settings, read afresh in an empty folder with no database,
    broker or target variables set (for code that reads `get_settings()` itself)."""
    from worker.accounts import get_accounts
    from worker.config import get_settings
    from worker.delivery.target_config import get_targets

    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "BROKER_URL", "REDIS_URL", "POLL_INTERVAL",
                 "PAVE_TRACKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    get_targets.cache_clear()
    get_accounts.cache_clear()
    yield tmp_path
    get_settings.cache_clear()
    get_targets.cache_clear()
    get_accounts.cache_clear()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "pave_api_url": "http://127.0.0.1:9/v1",
        **SIM_CREDENTIALS,
        "poll_interval": 60,
        "poll_interval_idle": 300,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def postgres_url() -> str:
    """The test database, created if missing; skips (or fails) when unreachable."""
    url = make_url(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    except Exception as exc:  # any failure to reach the server
        unavailable(f"PostgreSQL unreachable at {url.render_as_string()}: {exc}")
    finally:
        admin.dispose()
    return url.render_as_string(hide_password=False)


_migrated: set[str] = set()
TABLES = ("dispatch_state, account_pauses, delivery_attempts, deliveries, events, "
          "status_changes, tracked_sessions")


def fresh_database(url: str) -> str:
    """Migrated once per test run, emptied before every test."""
    if url not in _migrated:
        settings = make_settings(url)
        engine = engine_for(url)
        with engine.begin() as connection:
            # pave_account: the table migration 0007 replaced, in a database left older.
            connection.execute(text(f"DROP TABLE IF EXISTS {TABLES}, pave_account, "
                                    "alembic_version CASCADE"))
        upgrade_database(settings)
        _migrated.add(url)
    with engine_for(url).begin() as connection:
        connection.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    upgrade_database(make_settings(url))
    return url


@pytest.fixture
def pg_url() -> str:
    return fresh_database(postgres_url())


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs on the embedded SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
        return url
    return fresh_database(postgres_url())


@pytest.fixture
def sessions(database_url: str) -> sessionmaker[Session]:
    return session_factory(database_url)


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis unreachable at {REDIS_URL}: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def simulator() -> Simulator:
    return Simulator(**{"api_key": "sim-api-key", "username": "sim-user",
                        "api_secret": "sim-api-secret"})


@pytest.fixture
def simulator_url(simulator: Simulator) -> Iterator[str]:
    with running_simulator(simulator) as url:
        yield url


@pytest.fixture
def simulator_for_e2e() -> Iterator[tuple[Simulator, str]]:
    simulator = Simulator()
    with running_simulator(simulator) as url:
        yield simulator, url


@pytest.fixture
def tracker_process(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started by the test; stopped, with every child, whatever happens."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        stop_process_group(process)

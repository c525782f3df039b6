"""Migrations: upgrade, downgrade, upgrade again, and nothing left for autogenerate."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from tests.conftest import make_settings, postgres_url
from worker.db import Base, engine_for
from worker.schema import alembic_config, current_and_head


def run(url: str, *steps: tuple[str, str]) -> None:
    config = alembic_config()
    with engine_for(url).begin() as connection:
        config.attributes["connection"] = connection
        for action, target in steps:
            getattr(command, action)(config, target)


def check_round_trip(url: str) -> None:
    run(url, ("upgrade", "head"), ("downgrade", "base"))
    assert set(inspect(engine_for(url)).get_table_names()) <= {"alembic_version"}
    run(url, ("upgrade", "head"))
    current, head = current_and_head(make_settings(url))
    assert current == head is not None
    with engine_for(url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_sqlite_round_trip(sqlite_url: str) -> None:
    check_round_trip(sqlite_url)


def test_postgresql_round_trip(pg_url: str) -> None:
    check_round_trip(postgres_url())

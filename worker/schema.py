"""Migrations from code: `pave-tracker db upgrade`, and the check every command makes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from worker.config import Settings
from worker.db import engine_for
from worker.errors import PaveTrackerError, SchemaOutOfDate

PACKAGE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    """Alembic's config, from the repository or from the installed wheel."""
    for top in (PACKAGE.parent, PACKAGE):
        if (top / "alembic.ini").is_file() and (top / "migrations").is_dir():
            config = Config(str(top / "alembic.ini"))
            config.set_main_option("script_location", str(top / "migrations"))
            return config
    raise PaveTrackerError("the migrations are missing from this installation")


def upgrade_database(settings: Settings) -> None:
    engine = engine_for(settings.database_url)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_and_head(settings: Settings) -> tuple[str | None, str | None]:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine_for(settings.database_url).connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head


def ensure_schema(settings: Settings) -> None:
    """The embedded SQLite database migrates itself; a server database must be migrated.

    Migrating a shared PostgreSQL from every worker at start would race; it is the
    release step's job (`pave-tracker db upgrade`, Procfile's `release`).
    """
    if settings.database_url.startswith("sqlite"):
        upgrade_database(settings)
        return
    current, head = current_and_head(settings)
    if current != head:
        raise SchemaOutOfDate(
            f"the database is at revision {current or 'none'}, the code needs {head}: "
            "run `pave-tracker db upgrade`"
        )

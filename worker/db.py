"""The engine and session factory, built in one place, and the declarative base."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Engine,
    Insert,
    MetaData,
    create_engine,
    event,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so that migrations can name what they drop.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONDocument = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every database.

    PostgreSQL keeps the zone; SQLite keeps none, so values are stored as naive UTC
    and given their zone back when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: every time in pave-tracker is UTC-aware")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def use_wal(dbapi_connection: Any, *, busy_seconds: float = 30.0) -> None:
    """WAL journal mode and a busy timeout on a new SQLite connection.

    Switching a database to WAL needs a moment when no other connection is writing it,
    and SQLite answers "database is locked" at once instead of waiting: its busy timeout
    does not cover the switch. Two processes opening a brand-new file together (`run`,
    and a `track` right after it) met it. So the switch is retried for as long as the
    busy timeout would have waited.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        deadline = time.monotonic() + busy_seconds
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
    finally:
        cursor.close()


def _make_sqlite_serializable(engine: Engine) -> None:
    """Take SQLite's write lock at BEGIN, so concurrent writers queue instead of failing.

    pysqlite's own transaction handling begins lazily and a read that later wants to
    write can fail with "database is locked" at once; BEGIN IMMEDIATE waits for the
    lock (busy_timeout) instead. Recipe from the SQLAlchemy SQLite dialect docs,
    "Serializable isolation / Savepoints / Transactional DDL".
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None
        use_wal(dbapi_connection)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def build_engine(database_url: str) -> Engine:
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, connect_args={"timeout": 30})
        _make_sqlite_serializable(engine)
        return engine
    return create_engine(database_url, pool_pre_ping=True, pool_size=5, max_overflow=10)


@lru_cache(maxsize=8)
def engine_for(database_url: str) -> Engine:
    return build_engine(database_url)


def session_factory(database_url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(database_url), expire_on_commit=False)


def insert_ignoring_duplicates(db: Session, model: Any, *, unique: list[str],
                               where: ColumnElement[bool] | None = None) -> Insert:
    """INSERT … ON CONFLICT (unique) DO NOTHING, on PostgreSQL and SQLite alike; `where`
    names a partial unique index by its predicate."""
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing(index_elements=unique,
                                                               index_where=where)
    if dialect == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing(index_elements=unique,
                                                           index_where=where)
    raise ValueError(f"unsupported database: {dialect} (use SQLite or PostgreSQL)")


ModelT = TypeVar("ModelT")


def locked_singleton(db: Session, model: type[ModelT], *, row_id: int = 1) -> ModelT:
    """A table's one row, inserted if missing and locked until the transaction ends.

    ON CONFLICT DO NOTHING, not "read, then insert if absent": two transactions doing
    the latter at once both insert, and one of them fails on the primary key.
    """
    db.execute(insert_ignoring_duplicates(db, model, unique=["id"]).values(id=row_id))
    return db.scalars(select(model).where(model.id == row_id)  # type: ignore[attr-defined]
                      .with_for_update()).one()

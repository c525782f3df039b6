"""Switching a new SQLite file to WAL while another connection writes it: SQLite says
"database is locked" at once, without its busy timeout; `use_wal` waits it out."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from worker.db import use_wal


def test_the_switch_to_wal_waits_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")  # still in the rollback journal, mid-write
    writer.execute("INSERT INTO t VALUES (1)")

    plain = sqlite3.connect(path, timeout=30, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        plain.execute("PRAGMA journal_mode=WAL")  # what every new connection used to do
    plain.close()

    threading.Timer(0.3, lambda: writer.execute("COMMIT")).start()
    other = sqlite3.connect(path, isolation_level=None)
    use_wal(other, busy_seconds=10)
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other.close()
    writer.close()

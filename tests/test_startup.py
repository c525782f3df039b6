"""Nothing happens at import time, the API process never loads the tasks, and the tick
publishes only once its database session has ended."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import add_session
from worker.config import get_settings
from worker.db import session_factory, utcnow
from worker.models import Delivery, DeliveryState, Event
from worker.schema import upgrade_database


def python(code: str, tmp_path: Path, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_celery_app_makes_nothing(tmp_path: Path) -> None:
    out = python("import os, worker.celery_app\n"
                 "print(os.environ.get('PROMETHEUS_MULTIPROC_DIR'))", tmp_path,
                 METRICS_PORT="9999")
    assert out == "None"
    assert list(tmp_path.iterdir()) == []  # no metrics folder, no database, no broker file


def test_serve_does_not_load_the_tasks(tmp_path: Path) -> None:
    code = ("import sys, uvicorn\n"
            "uvicorn.run = lambda app, **options: print('worker.tasks' in sys.modules)\n"
            "from worker.cli import main\n"
            "main(['serve'])\n")
    assert python(code, tmp_path, API_TOKENS="t" * 16) == "False"


def test_the_tick_publishes_after_its_session_has_ended(
    settings_from_scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a session holds the database's write lock: publishing inside one would
    hold every other writer back for as long as the broker takes."""
    from worker import tasks

    settings = get_settings()
    upgrade_database(settings)
    with session_factory(settings.database_url).begin() as db:
        tracked = add_session(db, "ABC-1", next_poll_at=None)
        event = Event(session_id=tracked.id, type="session.completed",
                      dedupe_key="session.completed", occurred_at=utcnow(), body="{}")
        db.add(event)
        db.flush()
        db.add(Delivery(id="msg_1", event_id=event.id, target="webhook",
                        state=DeliveryState.PENDING, attempts=0, failures=0,
                        next_attempt_at=utcnow(), created_at=utcnow()))
    lock_free_when_published: list[bool] = []

    def probe() -> None:
        connection = sqlite3.connect(settings_from_scratch / "pave-tracker.db", timeout=0)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.rollback()
            lock_free_when_published.append(True)
        except sqlite3.OperationalError:
            lock_free_when_published.append(False)
        finally:
            connection.close()

    monkeypatch.setattr(tasks.deliver_outbox_task, "delay", probe)
    monkeypatch.setattr(tasks, "waiting_messages", lambda: 0)
    tasks.dispatch_due_polls_task.run()
    assert lock_free_when_published == [True]


def test_a_beat_of_its_own_leaves_no_metrics_folder(tmp_path: Path) -> None:
    """A lone beat imports the task modules (so it makes the folder) but serves nothing."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    celery = str(Path(sys.executable).with_name("celery"))
    beat = subprocess.Popen([celery, "-A", "worker.celery_app", "beat", "--loglevel", "INFO"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={"PATH": "/usr/bin:/bin", "TMPDIR": str(scratch),
                                 "METRICS_PORT": "9999", "DISPATCH_INTERVAL": "0.5"})
    try:
        assert beat.stdout is not None
        for line in beat.stdout:  # the first tick sent: the beat is well under way
            if b"Scheduler: Sending due task" in line:
                break
        assert list(scratch.glob("pave-tracker-metrics-*")) == []
    finally:
        beat.terminate()
        beat.wait(timeout=30)

"""Thin Celery tasks: ids and strings in, a plain function from `worker.tracking` does the work."""

from __future__ import annotations

from worker.celery_app import DISPATCH_TASK, POLL_TASK, app
from worker.config import get_settings
from worker.db import session_factory
from worker.tracking.polling import dispatch_due_polls, poll_leased_sessions, poll_runtime


@app.task(name=DISPATCH_TASK)
def dispatch_due_polls_task() -> int:
    settings = get_settings()

    def enqueue(ids: list[int], lease_token: str) -> None:
        poll_sessions_task.delay(ids, lease_token)

    return dispatch_due_polls(
        sessions=session_factory(settings.database_url), settings=settings, enqueue=enqueue
    )


@app.task(name=POLL_TASK)
def poll_sessions_task(ids: list[int], lease_token: str) -> int:
    settings = get_settings()
    report = poll_leased_sessions(
        ids=ids,
        lease_token=lease_token,
        sessions=session_factory(settings.database_url),
        settings=settings,
        fetch=poll_runtime(settings).fetch,
    )
    return report.recorded

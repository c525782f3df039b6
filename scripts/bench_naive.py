"""The benchmark's naive baseline: how most people would first write the poller.

One Celery task per session, a synchronous httpx client, one UPDATE per poll. It shares
nothing with pave-tracker but the database table, the simulator and the credentials, so
the benchmark compares designs, not settings.

    celery -A bench_naive worker   (with scripts/ on PYTHONPATH; the benchmark starts it)
"""

from __future__ import annotations

import datetime as dt
import os
from functools import cache

import httpx
from celery import Celery
from sqlalchemy import Engine, create_engine, text

from worker.pave.auth import PaveCredentials

POLL_TASK = "bench_naive.poll_one"

app = Celery("bench_naive", broker=os.environ.get("BROKER_URL", "redis://127.0.0.1:6379/13"))
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False,
                task_serializer="json", accept_content=["json"])

CREDENTIALS = PaveCredentials(api_key=os.environ.get("PAVE_API_KEY", ""),
                              username=os.environ.get("PAVE_USERNAME"),
                              api_secret=os.environ.get("PAVE_API_SECRET"))


@cache
def client() -> httpx.Client:
    return httpx.Client(base_url=os.environ.get("PAVE_API_URL", "") + "/", timeout=10)


@cache
def engine() -> Engine:
    url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url)


@app.task(name=POLL_TASK)
def poll_one(session_id: int, session_key: str) -> None:
    response = client().get(f"sessions/{session_key}",
                            headers=CREDENTIALS.headers(dt.datetime.now(dt.UTC)))
    response.raise_for_status()
    status = response.json()["status"]
    with engine().begin() as connection:
        connection.execute(
            text("UPDATE tracked_sessions SET status = :status, poll_count = poll_count + 1, "
                 "last_polled_at = clock_timestamp(), "
                 "next_poll_at = clock_timestamp() + interval '1 hour' WHERE id = :id"),
            {"status": status, "id": session_id})

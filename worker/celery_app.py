"""The Celery app: broker, beat schedule, and the settings that keep it safe.

Each setting has the reason it is set; see
https://docs.celeryq.dev/en/stable/userguide/configuration.html for the full list.
"""

from __future__ import annotations

import shutil
import threading
from typing import Any

from celery import Celery
from celery.signals import (
    beat_init,
    import_modules,
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from kombu.exceptions import ChannelError
from kombu.transport.sqlalchemy import Channel as SQLAlchemyChannel
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport
from sqlalchemy import Engine, event

from worker.config import MetricsFolder, Settings, get_settings, use_multiprocess_metrics
from worker.db import engine_for, use_wal

DISPATCH_TASK = "pave_tracker.dispatch_due_polls"
POLL_TASK = "pave_tracker.poll_sessions"
DELIVER_TASK = "pave_tracker.deliver_outbox"


class EmbeddedBrokerChannel(SQLAlchemyChannel):
    """kombu's SQL channel on a SQLite file in WAL mode, with a busy timeout.

    In SQLite's default journal mode a reader blocks every writer, and the worker reads
    the queue ten times a second while beat and the worker itself write to it; in WAL
    mode readers and the writer go side by side. (It did not change the demo's ~0.5 s
    message latency, whose cause is still unknown.)
    """

    def _engine_from_config(self) -> Engine:
        engine: Engine = super()._engine_from_config()

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection: Any, connection_record: Any) -> None:
            use_wal(dbapi_connection)

        return engine


class EmbeddedBrokerTransport(SQLAlchemyTransport):
    """kombu's SQLAlchemy transport, polling its table often enough for short intervals.

    Its `polling_interval` cannot be set through transport options: the sqla transport
    hands every option to `create_engine()`, which refuses unknown ones.
    """

    Channel = EmbeddedBrokerChannel
    polling_interval = 0.1


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": settings.effective_broker_url,
        "broker_connection_retry_on_startup": True,
        # JSON only: a message is ids and strings, never pickled objects.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # The database holds every result worth keeping.
        "task_ignore_result": True,
        "result_backend": None,
        # Short tasks, one reserved at a time: a slow batch never holds others back
        # (celery/celery#1933).
        "worker_prefetch_multiplier": 1,
        # Acknowledge after the work, so a worker that stops mid-batch leaves the message
        # to be redelivered; the lease tokens make a second run harmless.
        "task_acks_late": True,
        # A child killed outright (OOM, SIGKILL) has its message acknowledged, not
        # requeued: requeueing is how a message that kills its worker loops forever
        # (celery/celery#1628). Its sessions' leases run out and a later tick hands
        # them out again, at most MAX_UNFINISHED_POLLS times in a row.
        "task_reject_on_worker_lost": False,
        # A poll batch must end before its lease does, or another worker may take the
        # sessions over while it still runs (only the prefork pool enforces this).
        "task_time_limit": settings.lease_seconds,
        "task_soft_time_limit": settings.lease_seconds * 0.9,
        "timezone": "UTC",
        "enable_utc": True,
        # Beat only ever sends "lease what is due": nothing worth persisting to a file.
        "beat_scheduler": "celery.beat:Scheduler",
        "beat_schedule": {
            "dispatch-due-polls": {
                "task": DISPATCH_TASK,
                "schedule": settings.dispatch_interval,
                # A tick's message waits in the queue behind poll messages, about one
                # tick's worth (backpressure keeps it so); one that waited much longer
                # is useless: a later one leases.
                "options": {"expires": max(settings.dispatch_interval * 4, 1.0)},
            },
        },
        "worker_hijack_root_logger": False,
    }
    if settings.uses_embedded_broker:
        # kombu picks the transport from a `sqla+` prefix before looking at
        # broker_transport, so the prefix goes and the class is named instead.
        config["broker_url"] = settings.effective_broker_url.removeprefix("sqla+")
        config["broker_transport"] = "worker.celery_app:EmbeddedBrokerTransport"
        config["broker_transport_options"] = {"connect_args": {"timeout": 30}}
        # The SQL transport has no fanout exchanges: no remote control, no events.
        config["worker_enable_remote_control"] = False
        config["worker_send_task_events"] = False
    else:
        # Redis redelivers a message not acknowledged within this many seconds. Nothing
        # here takes longer than a lease or waits on an ETA, so an hour is generous.
        config["broker_transport_options"] = {"visibility_timeout": 3600}
    return config


def create_app(settings: Settings | None = None) -> Celery:
    """The app; configured from `settings`, or from the process's settings the first time
    the configuration is read (never at import: importing this module reads nothing)."""
    app = Celery("pave_tracker", include=["worker.tasks"])
    if settings is not None:
        app.conf.update(celery_config(settings))
    else:
        app.add_defaults(lambda: celery_config(get_settings()))
    return app


app = create_app()


def send_poll(ids: list[int], lease_token: str) -> None:
    """Send one poll batch, by task name: a process that only sends (the API) need not
    import the tasks. The header's short `argsrepr` (what logs and Flower show) spares
    Celery from writing out a hundred ids in every message."""
    # Celery takes `argsrepr` among its message options; celery-types does not list it.
    options: dict[str, Any] = {"argsrepr": f"({len(ids)} sessions, lease {lease_token[:8]})"}
    app.send_task(POLL_TASK, (ids, lease_token), **options)


def waiting_messages() -> int:
    """Messages waiting in the broker's queue, not yet taken by a worker (backpressure)."""
    with app.connection_for_read() as connection:
        try:
            # Every kombu channel has queue_declare (AMQP's); celery-types' StdChannel omits it.
            channel: Any = connection.default_channel
            declared = channel.queue_declare(queue=app.conf.task_default_queue, passive=True)
        except ChannelError:
            return 0  # Redis keeps no empty list: no queue is an empty queue
        return int(declared.message_count)


# The metrics folder this worker made, to remove when it stops.
_metrics: list[MetricsFolder] = []
_in_a_worker = threading.Event()


@import_modules.connect
def _multiprocess_metrics(**_: Any) -> None:
    """As a worker starts, before it imports the task modules (and they prometheus_client)."""
    if folder := use_multiprocess_metrics(get_settings()):
        _metrics.append(folder)


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    _in_a_worker.set()
    settings = get_settings()
    if settings.metrics_port is not None and _metrics:
        from worker.metrics import serve_metrics

        serve_metrics(settings.metrics_host, settings.metrics_port, _metrics[0].path)


@beat_init.connect
def _no_metrics_in_a_lone_beat(**_: Any) -> None:
    """A beat of its own imports the task modules too (so the folder was made) but runs
    no task and serves no metrics: the folder goes at once. A beat inside a worker
    (`run`) leaves it to the worker."""
    if not _in_a_worker.is_set():
        _remove_metrics_folders()


@worker_process_shutdown.connect
def _forget_child(pid: int | None = None, **_: Any) -> None:
    _close_poll_runtimes()
    if _metrics and pid is not None:
        from worker.metrics import forget_process

        forget_process(pid, _metrics[0].path)


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    _close_poll_runtimes()
    _remove_metrics_folders()


def _remove_metrics_folders() -> None:
    for folder in _metrics:
        if folder.made_here:
            shutil.rmtree(folder.path, ignore_errors=True)


def _close_poll_runtimes() -> None:
    from worker.pave.runtime import close_poll_runtimes

    close_poll_runtimes()


@setup_logging.connect
def _our_logging(loglevel: str | int | None = None, **_: Any) -> None:
    """Celery leaves logging alone when this signal has a receiver: ours is JSON or
    console lines with secrets redacted (`worker.logs`)."""
    from worker.accounts import get_accounts
    from worker.delivery.target_config import get_targets
    from worker.logs import configure_logging

    configure_logging(get_settings(), get_targets(), accounts=get_accounts(), level=loglevel)


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    """A forked child must not share the parent's database connections."""
    engine_for(get_settings().database_url).dispose(close=False)

"""Thin Celery tasks: ids and strings in, a plain function does the work."""

from __future__ import annotations

from worker.accounts import get_accounts
from worker.celery_app import (
    DELIVER_TASK,
    DISPATCH_TASK,
    POLL_TASK,
    app,
    send_poll,
    waiting_messages,
)
from worker.config import get_settings
from worker.db import session_factory, utcnow
from worker.delivery.draining import drain_outbox
from worker.delivery.outbox import has_due_deliveries
from worker.delivery.target_config import get_targets
from worker.pave.runtime import poll_runtime
from worker.tracking.digests import digests_due, record_digests
from worker.tracking.nudges import has_due_nudges, record_due_nudges
from worker.tracking.polling import dispatch_due_polls, poll_leased_sessions


@app.task(name=DISPATCH_TASK)
def dispatch_due_polls_task() -> int:
    """The beat tick: hand out due polls, record the nudges and digests that have come,
    and wake delivery work if anything is due."""
    settings = get_settings()
    accounts = get_accounts()
    sessions = session_factory(settings.database_url)
    leased = dispatch_due_polls(sessions=sessions, settings=settings, enqueue=send_poll,
                                targets=get_targets(), waiting=waiting_messages,
                                dealer_names=accounts.dealer_names)
    if settings.stall_after or settings.remind_after:
        now = utcnow()
        with sessions() as db:
            nudges_due = has_due_nudges(db=db, now=now)
        if nudges_due:
            with sessions.begin() as db:
                record_due_nudges(db=db, settings=settings, targets=get_targets(), now=now,
                                  dealer_names=accounts.dealer_names,
                                  timezones=accounts.timezones)
    if settings.digest_at is not None:
        now = utcnow()
        with sessions() as db:
            digests = digests_due(db=db, accounts=accounts, digest_at=settings.digest_at,
                                  targets=get_targets(), now=now)
        if digests:
            with sessions.begin() as db:
                record_digests(db=db, days=digests, stall_after=settings.stall_after,
                               targets=get_targets(), now=now)
    with sessions() as db:
        deliveries_due = has_due_deliveries(db=db, now=utcnow())
    # Publish once the session has ended: on SQLite it holds the write lock until then.
    if deliveries_due:
        deliver_outbox_task.delay()
    return leased


@app.task(name=POLL_TASK)
def poll_sessions_task(ids: list[int], lease_token: str) -> int:
    settings = get_settings()
    accounts = get_accounts()
    report = poll_leased_sessions(
        ids=ids,
        lease_token=lease_token,
        sessions=session_factory(settings.database_url),
        settings=settings,
        fetch=poll_runtime(settings, accounts).fetch,
        targets=get_targets(),
        dealer_names=accounts.dealer_names,
    )
    if report.deliveries:
        # Right after the commit, not at the next tick: a completion reaches its
        # targets as soon as it is seen.
        deliver_outbox_task.delay()
    return report.recorded


@app.task(name=DELIVER_TASK)
def deliver_outbox_task() -> int:
    settings = get_settings()
    report = drain_outbox(sessions=session_factory(settings.database_url), settings=settings,
                          targets=get_targets())
    if report.leased == settings.delivery_batch_size:
        deliver_outbox_task.delay()  # more may be waiting: keep draining
    return report.delivered

"""Delivery work: lease due deliveries, attempt them side by side, record every attempt.

A plain function; `worker.tasks` runs it on every beat tick that finds deliveries due
and right after a poll commits new ones. Every "now" in it comes from `clock`, so tests
move time on instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.config import Settings
from worker.db import utcnow
from worker.delivery.adf.sending import send_adf
from worker.delivery.attempts import AttemptResult, elapsed_ms
from worker.delivery.crm import send_crm
from worker.delivery.email import send_email
from worker.delivery.hooks import call_hook
from worker.delivery.outbox import (
    LeasedDelivery,
    give_up_on_deliveries_that_kill_their_worker,
    lease_due_deliveries,
    record_attempt,
)
from worker.delivery.targets import (
    AdfTarget,
    CrmTarget,
    EmailTarget,
    HookTarget,
    Target,
    WebhookTarget,
)
from worker.delivery.webhook import send_webhook
from worker.models import DeliveryState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrainReport:
    leased: int
    delivered: int
    failed: int
    # Ended without an attempt: past MAX_UNFINISHED_ATTEMPTS leases that never finished.
    gave_up: int = 0


def attempt_delivery(
    client: httpx.Client, targets: dict[str, Target], delivery: LeasedDelivery,
    now: dt.datetime,
) -> AttemptResult:
    """One attempt; whatever goes wrong in it is this delivery's failed attempt, recorded
    like any other, and never its neighbours' (they share the batch, not its fate)."""
    started = time.perf_counter()
    try:
        return _attempt(client, targets, delivery, now)
    except Exception as exc:
        log.exception("delivery %s to %s failed unexpectedly", delivery.id, delivery.target)
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started),
                             error=f"unexpected {type(exc).__name__}: {exc}"[:300])


def _attempt(
    client: httpx.Client, targets: dict[str, Target], delivery: LeasedDelivery,
    now: dt.datetime,
) -> AttemptResult:
    target = targets.get(delivery.target)
    common = {"delivery_id": delivery.id, "body": delivery.body}
    if isinstance(target, WebhookTarget):
        return send_webhook(client, target, now=now, **common)
    if isinstance(target, CrmTarget):
        return send_crm(client, target, **common)
    if isinstance(target, EmailTarget):
        return send_email(target, **common)
    if isinstance(target, HookTarget):
        return call_hook(target, **common)
    if isinstance(target, AdfTarget):
        return send_adf(client, target, resend=delivery.replayed, now=now, **common)
    # Its target was removed from the configuration: keep retrying in case it returns,
    # and let the schedule end it.
    return AttemptResult(delivered=False, duration_ms=0.0,
                         error=f"target {delivery.target!r} is not configured")


def drain_outbox(
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    targets: Sequence[Target],
    rng: random.Random | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
) -> DrainReport:
    rng = rng or random.Random()
    with sessions.begin() as db:
        now = clock()
        ended = give_up_on_deliveries_that_kill_their_worker(
            db=db, now=now, max_unfinished_attempts=settings.max_unfinished_attempts,
        )
        for dead in ended:
            log.error("delivery %s to %s: %s", dead.id, dead.target, dead.last_error)
        token, leased = lease_due_deliveries(
            db=db, now=now, limit=settings.delivery_batch_size,
            lease_seconds=settings.lease_seconds,
            max_unfinished_attempts=settings.max_unfinished_attempts,
        )
    if not leased:
        return DrainReport(leased=0, delivered=0, failed=0, gave_up=len(ended))

    by_name = {target.name: target for target in targets}
    with httpx.Client(follow_redirects=False) as client, \
            ThreadPoolExecutor(max_workers=len(leased)) as pool:
        results = list(pool.map(
            lambda delivery: attempt_delivery(client, by_name, delivery, clock()), leased
        ))

    delivered = failed = 0
    with sessions.begin() as db:
        now = clock()
        for delivery, result in zip(leased, results, strict=True):
            recorded = record_attempt(db=db, delivery_id=delivery.id, lease_token=token,
                                      result=result, now=now,
                                      retry_schedule=settings.delivery_retry_schedule, rng=rng)
            if recorded is None:
                log.warning("delivery %s: lease lost before its attempt was recorded",
                            delivery.id)
                continue
            _log_attempt(delivery, result, recorded.state)
            metrics.DELIVERIES.labels(delivery.target,
                                      "delivered" if result.delivered else "failed").inc()
            delivered += result.delivered
            failed += not result.delivered
    return DrainReport(leased=len(leased), delivered=delivered, failed=failed,
                       gave_up=len(ended))


def _log_attempt(delivery: LeasedDelivery, result: AttemptResult, state: DeliveryState) -> None:
    data = json.loads(delivery.body).get("data", {})
    # A session's event names its key; an account's own (a digest), its account.
    about = data.get("session_key") or f"account {data.get('account')}"
    if result.delivered:
        log.info("delivered %s of %s to %s (%s) in %.0f ms", delivery.event_type, about,
                 delivery.target, delivery.id, result.duration_ms)
    else:
        log.warning("delivery %s of %s to %s failed (%s), now %s", delivery.event_type,
                    about, delivery.target, result.error, state.value)

"""Delivery work against real receivers on loopback: webhooks verified with the
`standardwebhooks` package, CRM feeds, emails through aiosmtpd, Python hooks."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.receivers import (
    OTHER_SECRET,
    SECRET,
    Sink,
    WebhookReceiver,
    self_signed_certificate,
    smtp_server,
)
from tests.test_outbox import complete
from worker.db import utcnow
from worker.delivery.draining import DrainReport, drain_outbox
from worker.delivery.targets import CrmTarget, EmailTarget, HookTarget, Target, WebhookTarget
from worker.models import Delivery, DeliveryAttempt, DeliveryState
from worker.pave.simulator import serving

HOOK_CALLS: list[dict[str, Any]] = []


def record_hook(event: dict[str, Any]) -> None:
    HOOK_CALLS.append(event)


def failing_hook(event: dict[str, Any]) -> None:
    raise RuntimeError("the DMS is down")


RELEASE_HUNG_HOOKS = threading.Event()


def hanging_hook(event: dict[str, Any]) -> None:
    # Bounded all the same, so that a hook run without a timeout fails the test, not hangs it.
    RELEASE_HUNG_HOOKS.wait(timeout=30)


def drain(sessions: sessionmaker[Session], targets: list[Target], **settings: Any) -> None:
    values = {"delivery_retry_schedule": "0,0,0", **settings}
    drain_outbox(sessions=sessions, settings=make_settings("sqlite://", **values),
                 targets=targets)


def states(sessions: sessionmaker[Session]) -> list[tuple[str, DeliveryState, int]]:
    with sessions() as db:
        return [(d.target, d.state, d.attempts)
                for d in db.scalars(select(Delivery).order_by(Delivery.target))]


def webhook(url: str, *secrets: str, **extra: Any) -> WebhookTarget:
    return WebhookTarget(name="webhook", url=f"{url}/hook",
                         secrets=list(secrets or [SECRET]), **extra)


@pytest.fixture
def receiver() -> Iterator[tuple[WebhookReceiver, str]]:
    hook = WebhookReceiver()
    with serving(hook.app()) as url:
        yield hook, url


def test_webhook_is_signed_and_verifies(
    sessions: sessionmaker[Session], receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    target = webhook(url, headers={"X-Dealer": "Main St"})
    complete(sessions, [target])
    drain(sessions, [target])
    assert hook.rejected == []
    (got,) = hook.received
    assert got.body["type"] == "session.completed"
    assert got.body["data"]["session_key"] == "ABC-1"
    assert got.headers["x-dealer"] == "Main St"
    assert got.headers["content-type"] == "application/json"
    assert got.webhook_id.startswith("msg_")
    assert states(sessions) == [("webhook", DeliveryState.DELIVERED, 1)]


def test_a_failing_receiver_gets_the_same_id_each_time(
    sessions: sessionmaker[Session], receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    hook.fail_first = 2
    target = webhook(url)
    complete(sessions, [target])
    for _ in range(3):
        drain(sessions, [target])
    assert len(hook.received) == 3 and len(set(hook.ids())) == 1
    assert states(sessions) == [("webhook", DeliveryState.DELIVERED, 3)]
    with sessions() as db:
        attempts = list(db.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)))
    assert [a.status_code for a in attempts] == [500, 500, 204]
    assert all(a.duration_ms > 0 for a in attempts)
    assert attempts[0].error == "HTTP 500: try later"


def test_rotation_signs_with_every_secret(
    sessions: sessionmaker[Session], receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    hook.secret = OTHER_SECRET  # the receiver already moved to the new secret
    target = webhook(url, SECRET, OTHER_SECRET)
    complete(sessions, [target])
    drain(sessions, [target])
    assert hook.rejected == [] and len(hook.received) == 1
    assert len(hook.received[0].headers["webhook-signature"].split(" ")) == 2


def test_a_wrong_secret_is_rejected_by_the_receiver(
    sessions: sessionmaker[Session], receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    target = webhook(url, OTHER_SECRET)
    complete(sessions, [target])
    drain(sessions, [target])
    assert hook.rejected == ["No matching signature found"]
    assert states(sessions) == [("webhook", DeliveryState.RETRYING, 1)]


def test_gone_ends_it_and_retry_after_is_kept(sessions: sessionmaker[Session]) -> None:
    gone, slow = Sink(status=410), Sink(status=429)
    with serving(gone.app()) as gone_url, serving(slow.app()) as slow_url:
        targets: list[Target] = [webhook(gone_url), CrmTarget(
            name="slow", url=f"{slow_url}/api", body_template="{}")]  # type: ignore[arg-type]
        complete(sessions, targets)
        drain(sessions, targets, delivery_retry_schedule="0,0")
        drain(sessions, targets, delivery_retry_schedule="0,0")
    assert states(sessions) == [("slow", DeliveryState.RETRYING, 2),
                                ("webhook", DeliveryState.DEAD, 1)]


def test_a_receiver_that_does_not_answer_in_time(sessions: sessionmaker[Session]) -> None:
    hook = WebhookReceiver(hang_first=3)
    with serving(hook.app()) as url:
        target = webhook(url, timeout=0.5)
        complete(sessions, [target])
        drain(sessions, [target])
    with sessions() as db:
        delivery = db.scalars(select(Delivery)).one()
    assert delivery.state is DeliveryState.RETRYING
    assert delivery.last_error == "no answer within 0.5 s"


def test_crm_feed_renders_the_users_template(sessions: sessionmaker[Session]) -> None:
    sink = Sink()
    with serving(sink.app()) as url:
        target = CrmTarget(
            name="crm", url=f"{url}/api/leads",  # type: ignore[arg-type]
            body_template='{"vin": {{ vehicle.vin | tojson }}, "email": '
                          '{{ metadata.email | tojson }}, "event": {{ type | tojson }}}',
            auth_value="Bearer crm-token",  # type: ignore[arg-type]
        )
        complete(sessions, [target])
        drain(sessions, [target])
    (headers, body), = sink.received
    assert json.loads(body) == {"vin": "5N1", "email": "a@b.co", "event": "session.completed"}
    assert headers["authorization"] == "Bearer crm-token"
    assert headers["idempotency-key"].startswith("msg_")


def test_a_crm_template_that_is_not_json_is_dead_at_once(
    sessions: sessionmaker[Session]
) -> None:
    target = CrmTarget(name="crm", url="http://127.0.0.1:9/x",  # type: ignore[arg-type]
                       body_template="vin={{ vehicle.vin }}")
    complete(sessions, [target])
    drain(sessions, [target])
    with sessions() as db:
        delivery = db.scalars(select(Delivery)).one()
    assert delivery.state is DeliveryState.DEAD
    assert delivery.last_error is not None and "did not render JSON" in delivery.last_error


def test_python_hooks(sessions: sessionmaker[Session], tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    # An entry point, as an installed package would declare it.
    dist = tmp_path / "dealer_hooks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dealer-hooks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[pave_tracker.hooks]\nrecord = tests.test_delivery:record_hook\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    HOOK_CALLS.clear()
    targets: list[Target] = [
        HookTarget(name="by-callable", callable="tests.test_delivery:record_hook"),
        HookTarget(name="by-entry-point", entry_point="record"),
        HookTarget(name="broken", callable="tests.test_delivery:failing_hook"),
        HookTarget(name="missing", callable="tests.nowhere:hook"),
    ]
    complete(sessions, targets)
    drain(sessions, targets)
    assert len(HOOK_CALLS) == 2
    assert {call["type"] for call in HOOK_CALLS} == {"session.completed"}
    assert all(call["id"].startswith("msg_") for call in HOOK_CALLS)
    with sessions() as db:
        errors = {d.target: d.last_error for d in db.scalars(select(Delivery))}
    assert errors["broken"] == "hook raised RuntimeError: the DMS is down"
    assert errors["missing"] is not None and "cannot load" in errors["missing"]


@pytest.fixture
def hung_hooks() -> Iterator[None]:
    RELEASE_HUNG_HOOKS.clear()
    yield
    RELEASE_HUNG_HOOKS.set()


def test_a_hook_that_never_returns_fails_at_its_timeout(
    sessions: sessionmaker[Session], hung_hooks: None
) -> None:
    HOOK_CALLS.clear()
    targets: list[Target] = [
        HookTarget(name="hangs", callable="tests.test_delivery:hanging_hook", timeout=0.5),
        HookTarget(name="records", callable="tests.test_delivery:record_hook"),
    ]
    complete(sessions, targets)
    started = time.monotonic()
    drain(sessions, targets)
    assert time.monotonic() - started < 5
    assert len(HOOK_CALLS) == 1  # the same drain delivered the other one
    assert states(sessions) == [("hangs", DeliveryState.RETRYING, 1),
                                ("records", DeliveryState.DELIVERED, 1)]
    with sessions() as db:
        hung = db.scalars(select(Delivery).where(Delivery.target == "hangs")).one()
    assert hung.last_error == "hook did not return within 0.5 s"
    assert hung.next_attempt_at is not None  # retried on the schedule like any failure


def test_every_now_in_a_drain_comes_from_its_clock(
    sessions: sessionmaker[Session], receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    hook.fail_first = 1
    target = webhook(url)
    complete(sessions, [target])
    settings = make_settings("sqlite://", delivery_retry_schedule="60")
    t0 = utcnow()

    def drain_at(moment: dt.datetime | None = None) -> DrainReport:
        if moment is None:
            return drain_outbox(sessions=sessions, settings=settings, targets=[target])
        return drain_outbox(sessions=sessions, settings=settings, targets=[target],
                            clock=lambda: moment)

    assert drain_at(t0).failed == 1
    assert drain_at().leased == 0  # the retry is a minute away by the real clock
    assert drain_at(t0 + dt.timedelta(seconds=70)).delivered == 1

    assert hook.rejected == []
    assert [int(r.headers["webhook-timestamp"]) for r in hook.received] == [
        int(t0.timestamp()), int(t0.timestamp()) + 70]
    with sessions() as db:
        delivery = db.scalars(select(Delivery)).one()
        attempts = list(db.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)))
    assert [a.attempted_at for a in attempts] == [t0, t0 + dt.timedelta(seconds=70)]
    assert delivery.delivered_at == t0 + dt.timedelta(seconds=70)


def email_target(port: int, scheme: str = "smtp", credentials: str = "", **extra: Any
                 ) -> EmailTarget:
    values = {"name": "email", "smtp_url": f"{scheme}://{credentials}127.0.0.1:{port}",
              "sender": "desk@dealer.example", **extra}
    return EmailTarget.model_validate(values)


def test_email_plain_with_login(sessions: sessionmaker[Session]) -> None:
    with smtp_server(username="desk", password="p@ss word") as (mailbox, port):
        target = email_target(port, credentials="desk:p%40ss%20word@")
        complete(sessions, [target])
        drain(sessions, [target])
    assert states(sessions) == [("email", DeliveryState.DELIVERED, 1)]
    (message,) = mailbox.messages
    assert message["To"] == "a@b.co"  # the session's email metadata
    assert message["Subject"] == "Inspection complete: Nissan"
    assert message["Message-ID"].startswith("<msg_")
    parts = {part.get_content_type(): part.get_payload(decode=True).decode()
             for part in message.walk() if not part.is_multipart()}
    assert "Vehicle:    Nissan" in parts["text/plain"] and "5N1" in parts["text/plain"]
    assert "<h2>Inspection complete</h2>" in parts["text/html"]


def test_email_wrong_password_is_retried(sessions: sessionmaker[Session]) -> None:
    with smtp_server(username="desk", password="right") as (mailbox, port):
        # aiosmtpd stalls after a refused AUTH; a short timeout keeps the test quick.
        target = email_target(port, credentials="desk:wrong@", timeout=2)
        complete(sessions, [target])
        drain(sessions, [target])
    with sessions() as db:
        delivery = db.scalars(select(Delivery)).one()
    assert delivery.state is DeliveryState.RETRYING and mailbox.messages == []
    assert delivery.last_error is not None and "wrong" not in delivery.last_error


@pytest.mark.skipif(sys.platform != "linux", reason="needs openssl")
def test_email_over_starttls_and_tls(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    with smtp_server(username="desk", password="pw", starttls=server_context) as (box1, p1), \
            smtp_server(tls=server_context) as (box2, p2):
        targets: list[Target] = [
            email_target(p1, "smtp+starttls", "desk:pw@", ca_file=str(cert),
                         default_to="sales@dealer.example", name="starttls"),
            email_target(p2, "smtps", ca_file=str(cert), name="tls",
                         subject_template="Done: {{ session_key }}"),
        ]
        complete(sessions, targets)
        drain(sessions, targets)
    assert states(sessions) == [("starttls", DeliveryState.DELIVERED, 1),
                                ("tls", DeliveryState.DELIVERED, 1)]
    assert box2.messages[0]["Subject"] == "Done: ABC-1"


def test_email_without_a_recipient_is_dead(sessions: sessionmaker[Session]) -> None:
    target = email_target(9)
    with sessions.begin() as db:
        from tests.helpers import add_session
        add_session(db, "NOMAIL-1")
    complete(sessions, [target], key="NOMAIL-1")
    drain(sessions, [target])
    with sessions() as db:
        delivery = db.scalars(select(Delivery)).one()
    assert delivery.state is DeliveryState.DEAD
    assert delivery.last_error is not None and "no recipient" in delivery.last_error

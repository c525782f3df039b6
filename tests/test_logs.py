"""Log lines: JSON or console, and no secret ever printed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from tests.conftest import make_settings
from tests.receivers import SECRET
from worker.delivery.targets import CrmTarget, EmailTarget, WebhookTarget
from worker.logs import REDACTED, SecretRedactor, configure_logging, secrets_of


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield stream
    root.handlers, root.level = saved[0], saved[1]


SETTINGS = make_settings(
    "postgresql://tracker:db-pass-123@db/pave", pave_api_secret="pave-secret-456",
    redis_url="redis://:redis-pass-789@redis:6379/0",
    webhook_url="https://hooks.example/x", webhook_secret=SECRET,
)
TARGETS = [
    CrmTarget(name="crm", url="https://crm.example/api",  # type: ignore[arg-type]
              body_template="{}", auth_value="Bearer crm-token-000"),  # type: ignore[arg-type]
    EmailTarget(name="mail", smtp_url="smtps://u:smtp-pass-111@mail.example",  # type: ignore[arg-type]
                sender="a@b.co"),
    WebhookTarget(name="hook", url="https://hooks.example/y",  # type: ignore[arg-type]
                  secrets=[SECRET]),  # type: ignore[list-item]
]
SECRETS = ["db-pass-123", "pave-secret-456", "redis-pass-789", SECRET,
           SECRET.removeprefix("whsec_"), "crm-token-000", "smtp-pass-111"]


def test_every_configured_secret_is_known() -> None:
    known = secrets_of(SETTINGS, TARGETS)
    assert all(secret in known for secret in SECRETS)


def test_json_lines_carry_extra_fields_and_no_secret(captured: io.StringIO) -> None:
    configure_logging(make_settings("sqlite://", log_format="json",
                                    pave_api_secret="pave-secret-456"), [], stream=captured)
    logging.getLogger("worker.test").info("polled %s with %s", "ABC-1", "pave-secret-456",
                                          extra={"session_key": "ABC-1"})
    line = json.loads(captured.getvalue().strip())
    assert line["level"] == "INFO" and line["session_key"] == "ABC-1"
    assert line["message"] == f"polled ABC-1 with {REDACTED}"


def test_console_lines_and_tracebacks_are_redacted(captured: io.StringIO) -> None:
    configure_logging(make_settings("sqlite://", log_format="console",
                                    pave_api_secret="pave-secret-456"), [], stream=captured)
    try:
        raise RuntimeError("failed with pave-secret-456")
    except RuntimeError:
        logging.getLogger("worker.test").exception("boom")
    text = captured.getvalue()
    assert "boom" in text and "RuntimeError" in text and "pave-secret-456" not in text


def test_redactor_replaces_every_secret() -> None:
    redactor = SecretRedactor(SECRETS)
    text = " ".join(f"[{secret}]" for secret in SECRETS)
    assert all(secret not in redactor.redact(text) for secret in SECRETS)

"""Logging: JSON lines in production, readable lines in a terminal, secrets never printed.

`LOG_FORMAT=auto` (the default) writes JSON unless stderr is a terminal. The tracker logs
one line per poll outcome at DEBUG, per status transition and per delivery at INFO, and
failures at WARNING; every line passes through `SecretRedactor` first.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from worker.accounts import Account
from worker.config import Settings
from worker.delivery.targets import AdfTarget, CrmTarget, EmailTarget, Target, WebhookTarget

CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(processName)s %(message)s"
REDACTED = "[redacted]"


class SecretRedactor(logging.Filter):
    """Replaces every configured secret in a record's final text, whatever logged it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


def secrets_of(settings: Settings, targets: Iterable[Target],
               accounts: Iterable[Account] = ()) -> list[str]:
    """Every secret value the configuration holds."""
    values = [settings.pave_api_secret, settings.pave_api_token, settings.pave_api_key,
              settings.webhook_secret, settings.smtp_url]
    values += [settings.pave_push_token, *settings.api_tokens]
    for account in accounts:
        values += [account.api_key, account.api_secret, account.api_token,
                   account.push_token, *account.api_tokens]
    found = [value.get_secret_value() for value in values if value is not None]
    if settings.webhook_secret is not None:
        found += settings.webhook_secret.get_secret_value().replace(",", " ").split()
    for target in targets:
        if isinstance(target, WebhookTarget):
            for secret in target.secrets:
                found += [secret.get_secret_value(), secret.get_secret_value()[6:]]
        elif isinstance(target, CrmTarget | AdfTarget) and target.auth_value is not None:
            # The whole header value, and its token alone ("Bearer <token>").
            found += [target.auth_value.get_secret_value(),
                      target.auth_value.get_secret_value().split()[-1]]
        if isinstance(target, EmailTarget | AdfTarget) and target.smtp_url is not None:
            found.append(target.smtp_url.get_secret_value())
    for url in (settings.database_url, settings.effective_broker_url):
        password = _password_in(url)
        if password:
            found.append(password)
    for target in targets:
        if isinstance(target, EmailTarget | AdfTarget) and target.smtp_url is not None:
            password = _password_in(target.smtp_url.get_secret_value())
            if password:
                found.append(password)
    return found


def _password_in(url: str) -> str | None:
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def configure_logging(settings: Settings, targets: Iterable[Target], *,
                      accounts: Iterable[Account] = (),
                      level: str | int | None = None, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not stream.isatty())
    formatter: logging.Formatter
    if use_json:
        formatter = JsonFormatter(JSON_FIELDS, rename_fields={"asctime": "time",
                                                              "levelname": "level",
                                                              "processName": "process"})
    else:
        formatter = logging.Formatter(CONSOLE_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(SecretRedactor(secrets_of(settings, targets, accounts)))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level if isinstance(level, int) else (level or settings.log_level).upper())
    # httpx logs every request at INFO; the tracker logs each poll's outcome itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)

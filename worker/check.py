"""`pave-tracker check`: can this configuration work? One line per thing it needs.

Nothing is written and no event is sent: PAVE is asked about a key that cannot exist
(a 404 proves the credentials), targets are only connected to (SMTP logs in and quits).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

from kombu import Connection

from worker.accounts import DEFAULT_ACCOUNT, Account, Accounts
from worker.config import Settings
from worker.delivery.email import parse_smtp_url, smtp_session
from worker.delivery.hooks import resolve_hook
from worker.delivery.targets import (
    AdfTarget,
    CrmTarget,
    EmailTarget,
    HookTarget,
    Target,
    WebhookTarget,
)
from worker.errors import HookNotFound, PaveAuthError, PaveError, PaveNotFound
from worker.pave.auth import credentials_from
from worker.pave.client import PaveClient
from worker.schema import current_and_head

TIMEOUT = 5.0


@dataclass(frozen=True)
class Finding:
    what: str
    ok: bool
    detail: str


def run_checks(settings: Settings, accounts: Accounts,
               targets: tuple[Target, ...]) -> Iterator[Finding]:
    yield _guarded("database", lambda: check_database(settings))
    yield _guarded("broker", lambda: check_broker(settings))
    for account in accounts:
        yield _guarded(f"PAVE account {account.name}",
                       partial(check_pave, settings, account))
    for target in targets:
        yield _guarded(f"target {target.name} ({target.kind})", partial(check_target, target))


def _guarded(what: str, check: Callable[[], str]) -> Finding:
    try:
        return Finding(what, True, check())
    except Exception as exc:  # every failure is a finding, never a traceback
        return Finding(what, False, _one_line(exc))


def check_database(settings: Settings) -> str:
    current, head = current_and_head(settings)
    if current != head and settings.database_url.startswith("sqlite"):
        return f"SQLite, at revision {current or 'none'}: migrates itself to {head} on first use"
    if current != head:
        raise RuntimeError(f"reachable, but at revision {current or 'none'} and the code "
                           f"needs {head}: run `pave-tracker db upgrade`")
    return f"reachable, migrated (revision {head})"


def check_broker(settings: Settings) -> str:
    from worker.celery_app import celery_config

    config = celery_config(settings)
    with Connection(config["broker_url"], transport=config.get("broker_transport"),
                    connect_timeout=TIMEOUT,
                    transport_options=config["broker_transport_options"]) as connection:
        connection.ensure_connection(max_retries=1, timeout=int(TIMEOUT))
    kind = "embedded (SQLite file)" if settings.uses_embedded_broker else "reachable"
    return kind


def check_pave(settings: Settings, account: Account) -> str:
    key = f"pave-tracker-check-{uuid.uuid4().hex[:12]}"

    async def ask() -> None:
        async with PaveClient(base_url=account.api_url,
                              credentials=credentials_from(account),
                              timeout=min(settings.pave_timeout, TIMEOUT)) as client:
            await client.get_session(key)

    try:
        asyncio.run(ask())
    except PaveNotFound:
        return f"credentials accepted by {account.api_url} (an unknown key answered 404)"
    except PaveAuthError as exc:
        where = ("PAVE_API_KEY and PAVE_USERNAME/PAVE_API_SECRET or PAVE_API_TOKEN"
                 if account.name == DEFAULT_ACCOUNT else
                 f"the variables [[account]] {account.name!r} names")
        raise RuntimeError(f"{exc}: check {where}") from None
    except PaveError as exc:
        raise RuntimeError(exc.describe()) from None
    raise RuntimeError(f"PAVE answered a session for {key}, which should not exist")


def check_target(target: Target) -> str:
    if isinstance(target, WebhookTarget | CrmTarget):
        return _tcp_reachable(str(target.url))
    if isinstance(target, AdfTarget):
        return _adf_reachable(target)
    if isinstance(target, EmailTarget):
        return _smtp_login(target)
    if isinstance(target, HookTarget):
        try:
            hook = resolve_hook(target)
        except HookNotFound as exc:
            raise RuntimeError(str(exc)) from None
        return f"callable {getattr(hook, '__module__', '?')}.{getattr(hook, '__name__', '?')}"
    raise RuntimeError("unknown kind of target")


def _adf_reachable(target: AdfTarget) -> str:
    """The lead's addresses (checked as the target was loaded, each one address) and
    where it goes: the CRM's URL, or the SMTP server, logged in."""
    if target.url is not None:
        return f"ADF leads POSTed to {_tcp_reachable(str(target.url))}"
    assert target.smtp_url is not None  # the model asks for url or smtp_url
    server = parse_smtp_url(target.smtp_url.get_secret_value())
    with smtp_session(server, ca_file=target.ca_file, timeout=TIMEOUT) as smtp:
        smtp.noop()
    return (f"ADF leads from {target.sender} to {target.default_to}, "
            f"SMTP {server.host}:{server.port} ({server.security})")


def _tcp_reachable(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with socket.create_connection((host, port), timeout=TIMEOUT):
        pass
    return f"{parts.scheme}://{host}:{port} accepts connections"  # no path: it may hold a token


def _smtp_login(target: EmailTarget) -> str:
    server = parse_smtp_url(target.smtp_url.get_secret_value())
    with smtp_session(server, ca_file=target.ca_file, timeout=TIMEOUT) as smtp:
        smtp.noop()
    logged_in = ", logged in" if server.username else ""
    return f"SMTP {server.host}:{server.port} ({server.security}){logged_in}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]

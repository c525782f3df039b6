"""Real receivers on loopback for the callback tests: a webhook endpoint that verifies
every request with the `standardwebhooks` package, a plain HTTP sink for CRM feeds, and
an aiosmtpd SMTP server."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes: the Standard Webhooks example
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3"


@dataclass
class Received:
    webhook_id: str
    at: float  # time.time() when it arrived
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class WebhookReceiver:
    """Verifies each request; answers `fail_first` failures per webhook-id, then 204."""

    secret: str = SECRET
    fail_first: int = 0
    failure: int = 500
    failure_headers: dict[str, str] = field(default_factory=dict)
    hang_first: float = 0.0  # seconds the first request of each id waits before answering
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        headers = dict(request.headers)
        try:
            body = Webhook(self.secret).verify(raw, headers)
        except WebhookVerificationError as exc:
            with self.lock:
                self.rejected.append(str(exc))
            return JSONResponse({"error": str(exc)}, status_code=400)
        webhook_id = headers["webhook-id"]
        with self.lock:
            seen = sum(1 for r in self.received if r.webhook_id == webhook_id)
            self.received.append(Received(webhook_id, time.time(), body, headers))
        if seen == 0 and self.hang_first:
            await asyncio.sleep(self.hang_first)
        if seen < self.fail_first:
            return Response("try later", status_code=self.failure, headers=self.failure_headers)
        return Response(status_code=204)

    def ids(self) -> list[str]:
        with self.lock:
            return [r.webhook_id for r in self.received]

    def unique(self) -> dict[str, Received]:
        """What a receiver that deduplicates on webhook-id keeps: the first of each id."""
        with self.lock:
            first: dict[str, Received] = {}
            for r in self.received:
                first.setdefault(r.webhook_id, r)
            return first


@dataclass
class Sink:
    """Any POST, recorded; answers `status`."""

    status: int = 200
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            self.received.append((dict(request.headers), await request.body()))
            return Response(status_code=self.status)
        return Starlette(routes=[Route("/{path:path}", handle, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class MailBox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@contextmanager
def smtp_server(*, username: str | None = None, password: str | None = None,
                tls: ssl.SSLContext | None = None, starttls: ssl.SSLContext | None = None
                ) -> Iterator[tuple[MailBox, int]]:
    """aiosmtpd on loopback; with `username`, AUTH is required and checked."""
    mailbox = MailBox()

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == username
              and auth_data.password.decode() == password)
        return AuthResult(success=ok)

    port = free_port()
    options: dict[str, Any] = {}
    if username:
        options.update(authenticator=authenticate, auth_required=True,
                       auth_require_tls=starttls is not None)
    if starttls is not None:
        options.update(tls_context=starttls, require_starttls=True)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, ssl_context=tls,
                            **options)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def json_body(raw: bytes) -> Any:
    return json.loads(raw)

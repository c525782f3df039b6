"""Follow-up emails over SMTP: plain, STARTTLS or TLS, from templates.

`smtp://user:pass@host:port` sends in the clear (port 25 by default),
`smtp+starttls://…` upgrades with STARTTLS (587), `smtps://…` is TLS from the start (465).
The recipient is the session's `email` metadata, else the target's default. Each part
(subject, text, HTML) is the target's own template, else the built-in one for the event:
the customer's reminder for `session.reminder`, the staff follow-up for the others.
The Message-ID is made from the delivery id, so a retried email is recognisably the same.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from worker.delivery.attempts import AttemptResult, elapsed_ms
from worker.delivery.targets import EmailTarget
from worker.delivery.templates import built_in_templates, render, template_context
from worker.errors import TemplateFailed

SECURITY_BY_SCHEME = {"smtp": "plain", "smtp+starttls": "starttls", "smtps": "tls"}
DEFAULT_PORTS = {"plain": 25, "starttls": 587, "tls": 465}


@dataclass(frozen=True, repr=False)
class SmtpServer:
    host: str
    port: int
    security: str
    username: str | None
    password: str | None


def parse_smtp_url(url: str) -> SmtpServer:
    parts = urlsplit(url)
    security = SECURITY_BY_SCHEME.get(parts.scheme)
    if security is None or not parts.hostname:
        raise ValueError("an SMTP URL is smtp://, smtp+starttls:// or smtps://user:pass@host:port")
    return SmtpServer(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORTS[security],
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


@contextmanager
def smtp_session(server: SmtpServer, *, ca_file: str | None, timeout: float
                 ) -> Iterator[smtplib.SMTP]:
    """Connected, upgraded to TLS as the URL asks, logged in if it has credentials."""
    context = ssl.create_default_context(cafile=ca_file)
    if server.security == "tls":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout,
                                              context=context)
    else:
        smtp = smtplib.SMTP(server.host, server.port, timeout=timeout)
    with smtp:
        if server.security == "starttls":
            smtp.starttls(context=context)
        if server.username:
            smtp.login(server.username, server.password or "")
        yield smtp


def build_message(target: EmailTarget, *, delivery_id: str, body: str) -> EmailMessage:
    document = json.loads(body)
    context = template_context(document)
    recipient = (context.get("metadata") or {}).get("email") or target.default_to
    if not recipient:
        raise TemplateFailed("no recipient: the session has no email metadata and the "
                             "target no default address")
    built_in = built_in_templates(context["type"])
    message = EmailMessage()
    message["From"] = target.sender
    message["To"] = recipient
    subject = render(target.subject_template or built_in.subject, context)
    message["Subject"] = " ".join(subject.split())
    message["Message-ID"] = f"<{delivery_id}@pave-tracker>"
    message.set_content(render(target.text_template or built_in.text, context))
    message.add_alternative(render(target.html_template or built_in.html, context, html=True),
                            subtype="html")
    return message


def send_email(target: EmailTarget, *, delivery_id: str, body: str) -> AttemptResult:
    started = time.perf_counter()
    try:
        server = parse_smtp_url(target.smtp_url.get_secret_value())
        message = build_message(target, delivery_id=delivery_id, body=body)
        message.as_bytes()  # what the standard library cannot serialise fails here, not mid-send
    except (ValueError, TemplateFailed) as exc:
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started), error=str(exc),
                             permanent=True)
    except Exception as exc:
        # The standard library's e-mail package raises IndexError, AttributeError and
        # others on addresses it cannot parse (`a@b.c,a@`): this message cannot be built.
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started), permanent=True,
                             error=f"cannot build the message: {type(exc).__name__}: {exc}"[:300])
    return send_message(server, message, ca_file=target.ca_file, timeout=target.timeout,
                        started=started)


def send_message(server: SmtpServer, message: EmailMessage, *, ca_file: str | None,
                 timeout: float, started: float) -> AttemptResult:
    """One message, sent; a server that is away or says no is a failed attempt."""
    try:
        with smtp_session(server, ca_file=ca_file, timeout=timeout) as smtp:
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        # smtplib's messages carry the server's reply, never the password.
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started),
                             error=f"SMTP: {type(exc).__name__}: {exc}"[:300])
    return AttemptResult(delivered=True, duration_ms=elapsed_ms(started))


"""An `adf` target's attempt: the lead e-mailed to the CRM's lead address, or POSTed.

The e-mail is what CRMs' lead parsers take: `text/plain; charset=utf-8`, its body the
ADF document and nothing else (no HTML part, no signature), its Message-ID made from
the delivery id so a retry is recognisably the same lead. A POST sends the same bytes as
`application/xml`, with the delivery id as `Idempotency-Key`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from email.message import EmailMessage

import httpx

from worker.delivery.adf.lead import build_lead, clean, mapping
from worker.delivery.attempts import AttemptResult, elapsed_ms
from worker.delivery.email import parse_smtp_url, send_message
from worker.delivery.http import post
from worker.delivery.targets import AdfTarget
from worker.errors import LeadIncomplete

USER_AGENT = "pave-tracker-adf"


def send_adf(client: httpx.Client, target: AdfTarget, *, delivery_id: str, body: str,
             resend: bool, now: dt.datetime) -> AttemptResult:
    started = time.perf_counter()
    document = json.loads(body)
    try:
        lead = build_lead(document, lead_id=delivery_id, interest=target.interest,
                          resend=resend, vendor_email=target.sender, now=now)
    except LeadIncomplete as exc:
        # The session's data cannot make a valid lead; retrying cannot change that.
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started),
                             error=f"no ADF lead: {exc}", permanent=True)
    if target.url is not None:
        headers = {**target.headers, "Content-Type": "application/xml; charset=utf-8",
                   "User-Agent": USER_AGENT, "Idempotency-Key": delivery_id}
        if target.auth_value is not None:
            headers[target.auth_header] = target.auth_value.get_secret_value()
        return post(client, str(target.url), body=lead, headers=headers,
                    timeout=target.timeout)
    return _email(target, lead, document=document, delivery_id=delivery_id,
                  started=started)


def lead_subject(document: dict[str, object], interest: str) -> str:
    data = mapping(document.get("data"))
    vehicle = mapping(data.get("vehicle"))
    described = " ".join(clean(vehicle.get(part)) for part in ("year", "make", "model")
                         if clean(vehicle.get(part)))
    kind = "Trade-in" if interest == "trade-in" else "Vehicle to sell"
    return f"{kind} lead: {described or 'vehicle'} (PAVE {clean(data.get('session_key'))})"


def lead_message(target: AdfTarget, lead: bytes, *, document: dict[str, object],
                 delivery_id: str) -> EmailMessage:
    text = lead.decode("utf-8")
    message = EmailMessage()
    message["From"] = target.sender or ""
    message["To"] = target.default_to or ""
    message["Subject"] = lead_subject(document, target.interest)
    message["Message-ID"] = f"<{delivery_id}@pave-tracker>"
    # 8bit keeps the document as it is for parsers that read the raw body; quoted-
    # printable would turn every `=` of its attributes into `=3D`.
    message.set_content(text, subtype="plain", charset="utf-8",
                        cte="7bit" if text.isascii() else "8bit")
    return message


def _email(target: AdfTarget, lead: bytes, *, document: dict[str, object],
           delivery_id: str, started: float) -> AttemptResult:
    if target.smtp_url is None:
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started),
                             error="no smtp_url and no url", permanent=True)
    try:
        server = parse_smtp_url(target.smtp_url.get_secret_value())
        message = lead_message(target, lead, document=document, delivery_id=delivery_id)
        message.as_bytes()
    except Exception as exc:
        return AttemptResult(delivered=False, duration_ms=elapsed_ms(started), permanent=True,
                             error=f"cannot build the message: {type(exc).__name__}: {exc}"[:300])
    return send_message(server, message, ca_file=target.ca_file, timeout=target.timeout,
                        started=started)

"""CRM feeds: a POST whose JSON body is the user's template, so it can match any CRM's API.

`Idempotency-Key` carries the delivery id, which many CRM APIs use to drop a retry.
"""

from __future__ import annotations

import json
import time

import httpx

from worker.delivery.attempts import AttemptResult, elapsed_ms
from worker.delivery.http import post
from worker.delivery.targets import CrmTarget
from worker.delivery.templates import render_json, template_context
from worker.errors import TemplateFailed

USER_AGENT = "pave-tracker-crm"


def send_crm(client: httpx.Client, target: CrmTarget, *, delivery_id: str,
             body: str) -> AttemptResult:
    started = time.perf_counter()
    try:
        rendered = render_json(target.body_template, template_context(json.loads(body)))
    except TemplateFailed as exc:
        return AttemptResult(delivered=False, error=str(exc), permanent=True,
                             duration_ms=elapsed_ms(started))
    headers = {**target.headers, "Content-Type": "application/json",
               "User-Agent": USER_AGENT, "Idempotency-Key": delivery_id}
    if target.auth_value is not None:
        headers[target.auth_header] = target.auth_value.get_secret_value()
    return post(client, str(target.url), body=rendered.encode(), headers=headers,
                timeout=target.timeout)

"""Standard Webhooks v1: `webhook-id`, `webhook-timestamp`, `webhook-signature`.

The signature is the `standardwebhooks` reference package's, made once per active
secret and sent space-separated, so receivers keep verifying during a secret rotation.
`webhook-id` is the delivery's id: the same on every retry, for receivers to dedupe on.
"""

from __future__ import annotations

import datetime as dt

import httpx
from standardwebhooks import Webhook

from worker.delivery.attempts import AttemptResult
from worker.delivery.http import post
from worker.delivery.targets import WebhookTarget

USER_AGENT = "pave-tracker-webhooks"


def signature_headers(
    *, secrets: list[str], delivery_id: str, body: str, now: dt.datetime
) -> dict[str, str]:
    moment = now.replace(microsecond=0)
    signatures = [Webhook(secret).sign(delivery_id, moment, body) for secret in secrets]
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def send_webhook(
    client: httpx.Client, target: WebhookTarget, *, delivery_id: str, body: str,
    now: dt.datetime,
) -> AttemptResult:
    secrets = [secret.get_secret_value() for secret in target.secrets]
    headers = {
        **target.headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signature_headers(secrets=secrets, delivery_id=delivery_id, body=body, now=now),
    }
    return post(client, str(target.url), body=body.encode(), headers=headers,
                timeout=target.timeout)

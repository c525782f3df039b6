"""Deliveries as JSON: in `show --json` (SPEC's shape) and in `deliveries --json`."""

from __future__ import annotations

import re
from typing import Any

from worker.delivery.outbox import DeliveryRow
from worker.views import iso

DELIVERY_ID = re.compile(r"msg_[0-9a-f]{32}")


def delivery_summary(row: DeliveryRow) -> dict[str, Any]:
    delivery = row.delivery
    return {"id": delivery.id, "event": row.event.type, "target": delivery.target,
            "state": delivery.state.value, "attempts": delivery.attempts}


def delivery_detail(row: DeliveryRow) -> dict[str, Any]:
    delivery = row.delivery
    return {
        **delivery_summary(row),
        # None for an account's own event (`account.digest`), which has no session.
        "session_key": row.session_key,
        "account": row.account,
        "created_at": iso(delivery.created_at),
        "delivered_at": iso(delivery.delivered_at),
        "next_attempt_at": iso(delivery.next_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
    }

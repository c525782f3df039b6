"""Deliveries as JSON: in `show --json` (SPEC's shape) and in `deliveries --json`."""

from __future__ import annotations

import re
from typing import Any

from worker.models import Delivery, Event
from worker.views import iso

DELIVERY_ID = re.compile(r"msg_[0-9a-f]{32}")


def delivery_summary(delivery: Delivery, event: Event, session_key: str) -> dict[str, Any]:
    return {"id": delivery.id, "event": event.type, "target": delivery.target,
            "state": delivery.state.value, "attempts": delivery.attempts}


def delivery_detail(delivery: Delivery, event: Event, session_key: str) -> dict[str, Any]:
    return {
        **delivery_summary(delivery, event, session_key),
        "session_key": session_key,
        "created_at": iso(delivery.created_at),
        "delivered_at": iso(delivery.delivered_at),
        "next_attempt_at": iso(delivery.next_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
    }

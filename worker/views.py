"""Sessions as JSON, in SPEC's `show --json` shape, and durations as people say them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from worker.models import StatusChange, TrackedSession


def iso(moment: dt.datetime | None) -> str | None:
    """UTC with a `Z`; milliseconds only when there are any."""
    if moment is None:
        return None
    moment = moment.astimezone(dt.UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def spell_duration(seconds: float) -> str:
    """`1d 4h`, `3h 12m`, `45m`: how long, the way a person says it."""
    minutes = int(seconds // 60)
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "",
             f"{minutes}m" if minutes and not days else ""]
    return " ".join(part for part in parts if part) or f"{int(seconds)}s"


def session_summary(tracked: TrackedSession, *, dealer_name: str | None = None
                    ) -> dict[str, Any]:
    """The object `list --json` prints: `show --json` without history and deliveries."""
    return {
        "session_key": tracked.session_key,
        "account": tracked.account,
        "dealer_name": dealer_name,
        "status": tracked.status,
        "tracking": tracked.tracking.value,
        "inspect_started_at": iso(tracked.inspect_started_at),
        "inspect_ended_at": iso(tracked.inspect_ended_at),
        "vehicle": tracked.vehicle,
        "metadata": tracked.user_metadata,
        "capture_url": tracked.redirect_url,
        "status_since": iso(tracked.status_since),
        "polls": tracked.poll_count,
        "last_polled_at": iso(tracked.last_polled_at),
        "next_poll_at": iso(tracked.next_poll_at),
        "last_error": tracked.last_error,
    }


def history_entry(change: StatusChange) -> dict[str, Any]:
    return {"from": change.from_status, "to": change.to_status,
            "observed_at": iso(change.observed_at)}


def session_detail(
    tracked: TrackedSession,
    history: list[StatusChange],
    deliveries: list[dict[str, Any]],
    *,
    dealer_name: str | None = None,
) -> dict[str, Any]:
    return {
        **session_summary(tracked, dealer_name=dealer_name),
        "history": [history_entry(change) for change in history],
        "deliveries": deliveries,
    }

"""Which events an observation calls for, and the JSON document each one sends.

| event                                  | when                                          |
| -------------------------------------- | --------------------------------------------- |
| session.status_changed                 | every observed change, the first status too   |
| session.completed / expired / invalid  | the first time COMPLETE / EXPIRED / INVALID   |
| tracking.not_found / tracking.gave_up  | tracking ended without a terminal status      |
| session.stalled / session.reminder     | a beat tick's nudges (`worker.tracking.nudges`) |
| account.digest                         | once a day per account (`worker.tracking.digests`) |
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.models import StatusChange, TrackedSession, Tracking
from worker.views import history_entry, iso

STATUS_EVENTS = {
    "COMPLETE": "session.completed",
    "EXPIRED": "session.expired",
    "INVALID": "session.invalid",
}
TRACKING_EVENTS = {
    Tracking.NOT_FOUND: "tracking.not_found",
    Tracking.GAVE_UP: "tracking.gave_up",
}


@dataclass(frozen=True)
class EventSpec:
    type: str
    # Unique per session: the status-change events carry the poll that saw them.
    dedupe_key: str
    # What this event adds to the document's `data` (a nudge's reminder number…).
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observed:
    """What one poll (or a beat tick's look at the session) changed, as tracking hands it
    to delivery: a new status (a history row), the end of tracking, and/or a nudge."""

    change: StatusChange | None = None
    ended: Tracking | None = None
    nudges: tuple[EventSpec, ...] = ()


def events_for(observed: Observed) -> list[EventSpec]:
    events = []
    change = observed.change
    if change is not None:
        events.append(EventSpec("session.status_changed",
                                f"session.status_changed:{change.poll_number}"))
        if change.to_status in STATUS_EVENTS:
            event_type = STATUS_EVENTS[change.to_status]
            events.append(EventSpec(event_type, event_type))
    if observed.ended in TRACKING_EVENTS:
        event_type = TRACKING_EVENTS[observed.ended]
        events.append(EventSpec(event_type, event_type))
    return [*events, *observed.nudges]


def event_document(
    *,
    event_type: str,
    tracked: TrackedSession,
    history: Sequence[StatusChange],
    previous_status: str | None,
    occurred_at: dt.datetime,
    results: dict[str, Any] | None = None,
    dealer_name: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "session_key": tracked.session_key,
        "account": tracked.account,
        "dealer_name": dealer_name,
        "status": tracked.status,
        "previous_status": previous_status,
        "tracking": tracked.tracking.value,
        "inspect_started_at": iso(tracked.inspect_started_at),
        "inspect_ended_at": iso(tracked.inspect_ended_at),
        "vehicle": tracked.vehicle,
        # PAVE's own options (who the link was sent to, by which dealer): an ADF lead's
        # customer and vendor when the dealer's metadata does not say.
        "options": tracked.options,
        "metadata": tracked.user_metadata,
        "capture_url": tracked.redirect_url,
        "history": [history_entry(change) for change in history],
    }
    if results is not None:
        data["results"] = results
    data.update(extra or {})
    return {"type": event_type, "timestamp": iso(occurred_at.replace(microsecond=0)),
            "data": data}


def account_event_document(*, event_type: str, account: str, dealer_name: str | None,
                           occurred_at: dt.datetime, data: dict[str, Any]) -> dict[str, Any]:
    """The document of an account's own event (`account.digest`): no session in it."""
    return {"type": event_type, "timestamp": iso(occurred_at.replace(microsecond=0)),
            "data": {"account": account, "dealer_name": dealer_name, **data}}


def serialise(document: dict[str, Any]) -> str:
    """The exact bytes every attempt sends (and signs)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)

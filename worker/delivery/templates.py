"""Rendering users' templates (email subject and bodies, CRM bodies) with Jinja.

Templates come from the operator's config, so they render in Jinja's sandbox. The
context is the event's `data` plus `type`, `timestamp` and a few conveniences.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from worker.errors import TemplateFailed

_plain = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
_html = ImmutableSandboxedEnvironment(autoescape=True, keep_trailing_newline=True)

EVENT_HEADLINES = {
    "session.completed": "Inspection complete",
    "session.expired": "Inspection expired",
    "session.invalid": "Inspection invalid",
    "session.status_changed": "Inspection status changed",
    "tracking.not_found": "Inspection session not found",
    "tracking.gave_up": "Stopped following an inspection",
}

DEFAULT_SUBJECT = "{{ headline }}: {{ vehicle_description or session_key }}"

DEFAULT_TEXT = """\
{{ headline }}.

{%- if dealer_name %}
Dealer:     {{ dealer_name }}
{%- endif %}
Session:    {{ session_key }}
Status:     {{ status or "unknown" }}
Vehicle:    {{ vehicle_description or "not captured yet" }}
{%- if vehicle and vehicle.vin %}
VIN:        {{ vehicle.vin }}
{%- endif %}
{%- if vehicle and vehicle.odom_reading %}
Odometer:   {{ vehicle.odom_reading }} {{ (vehicle.odom_unit or "") | lower }}
{%- endif %}
Started:    {{ inspect_started_at or "-" }}
Finished:   {{ inspect_ended_at or "-" }}
"""

DEFAULT_HTML = """\
<!doctype html>
<html><body style="font-family: sans-serif">
<h2>{{ headline }}</h2>
<table>
{%- if dealer_name %}
<tr><th align="left">Dealer</th><td>{{ dealer_name }}</td></tr>
{%- endif %}
<tr><th align="left">Session</th><td>{{ session_key }}</td></tr>
<tr><th align="left">Status</th><td>{{ status or "unknown" }}</td></tr>
<tr><th align="left">Vehicle</th><td>{{ vehicle_description or "not captured yet" }}</td></tr>
{%- if vehicle and vehicle.vin %}
<tr><th align="left">VIN</th><td>{{ vehicle.vin }}</td></tr>
{%- endif %}
<tr><th align="left">Started</th><td>{{ inspect_started_at or "-" }}</td></tr>
<tr><th align="left">Finished</th><td>{{ inspect_ended_at or "-" }}</td></tr>
</table>
</body></html>
"""


def template_context(document: dict[str, Any]) -> dict[str, Any]:
    data = dict(document.get("data") or {})
    vehicle = data.get("vehicle") or {}
    described = " ".join(str(vehicle[part]) for part in ("year", "make", "model")
                         if vehicle.get(part))
    return {
        **data,
        "type": document.get("type"),
        "timestamp": document.get("timestamp"),
        "event": document,
        "headline": EVENT_HEADLINES.get(str(document.get("type")), "Inspection update"),
        "vehicle_description": described,
    }


def render(source: str, context: dict[str, Any], *, html: bool = False) -> str:
    try:
        return (_html if html else _plain).from_string(source).render(context)
    except TemplateError as exc:
        raise TemplateFailed(f"template error: {exc}") from None
    except Exception as exc:
        # A template meeting data it did not expect (`metadata.count + 1` on "abc")
        # raises plain Python errors, not Jinja's: the same failure to make a message.
        raise TemplateFailed(f"template error: {type(exc).__name__}: {exc}"[:300]) from None


def render_json(source: str, context: dict[str, Any]) -> str:
    """A template that must produce a JSON document (a CRM body); checked, sent as rendered."""
    text = render(source, context)
    try:
        json.loads(text)
    except ValueError as exc:
        raise TemplateFailed(f"the body template did not render JSON: {exc}") from None
    return text

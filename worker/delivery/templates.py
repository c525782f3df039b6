"""Rendering users' templates (email subject and bodies, CRM bodies) with Jinja.

Templates come from the operator's config, so they render in Jinja's sandbox. The
context is the event's `data` plus `type`, `timestamp` and a few conveniences.

The built-in e-mails, for a target that sets no template of its own: the follow-up for
the dealer's staff (DEFAULT_*), the reminder for the customer (REMINDER_*) and the store
manager's daily digest (DIGEST_*);
`built_in_templates()` says which an event gets.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from worker.delivery.vehicles import odometer_unit
from worker.errors import TemplateFailed
from worker.views import spell_duration

_plain = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
_html = ImmutableSandboxedEnvironment(autoescape=True, keep_trailing_newline=True)

EVENT_HEADLINES = {
    "session.completed": "Inspection complete",
    "session.expired": "Inspection expired",
    "session.invalid": "Inspection invalid",
    "session.status_changed": "Inspection status changed",
    "tracking.not_found": "Inspection session not found",
    "tracking.gave_up": "Stopped following an inspection",
    "session.stalled": "Inspection stalled",
    "session.reminder": "Reminder: your vehicle inspection is waiting",
    "account.digest": "Daily inspection digest",
}

DEFAULT_SUBJECT = "{{ headline }}: {{ vehicle_description or session_key }}"

# Shared by every built-in e-mail: who it is from (the dealer, else the name PAVE's own
# text message was sent by) and the vehicle as a mapping, whatever PAVE sent.
_SENDER_FACTS = """\
{%- set sms = options.sms if options is mapping and options.sms is mapping else {} %}
{%- set dealer = dealer_name or sms.by or none %}
{%- set car = vehicle if vehicle is mapping else {} -%}
"""

# The follow-up's own: where its button goes, the dealer's `report_url` metadata, else the
# session's capture link, and only ever an http(s) URL.
_FOLLOW_UP_FACTS = _SENDER_FACTS + """\
{%- set report_url = metadata.report_url | web_url if metadata is mapping %}
{%- set link = report_url or capture_url | web_url %}
{%- set link_label = "View the inspection report" if report_url else "Open the inspection" %}
{%- set odometer = (car.odom_reading ~ " " ~ car.odom_unit | odometer_unit) | trim
                   if car.odom_reading or car.odom_reading == 0 %}
{%- set colours = [car.ext_col ~ " exterior" if car.ext_col,
                   car.int_col ~ " interior" if car.int_col] | select | join(", ") -%}
"""

DEFAULT_TEXT = _FOLLOW_UP_FACTS + """\
{{ headline }}.
{% if dealer %}
Dealer:     {{ dealer }}
{%- endif %}
Vehicle:    {{ vehicle_description or "not captured yet" }}
{%- if car.trim %}
Trim:       {{ car.trim }}
{%- endif %}
{%- if car.vin %}
VIN:        {{ car.vin }}
{%- endif %}
{%- if odometer %}
Odometer:   {{ odometer }}
{%- endif %}
{%- if colours %}
Colours:    {{ colours }}
{%- endif %}
Session:    {{ session_key }}
Status:     {{ status or "unknown" }}
Started:    {{ inspect_started_at | utc_time or "-" }}
Finished:   {{ inspect_ended_at | utc_time or "-" }}
{%- if link %}

{{ link_label }}:
{{ link }}
{%- endif %}
"""

# E-mail clients keep little of CSS: one table layout, every style inline, nothing fetched.
# Every built-in HTML e-mail is the same card: the document head, a hidden inbox preview
# line (`preview`, set by each), a dark band with the dealer's name (and `band` below it,
# "Vehicle inspection" unless set), their own rows, and the close.
_FONT = """\
{%- set font = "font-family: -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif;" %}
"""

_CARD_TOP = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<title>{{ headline }}</title>
</head>
<body style="margin: 0; padding: 0; background-color: #f2f4f7;">
<div style="display: none; max-height: 0; overflow: hidden;">{{ preview }}</div>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0"
 style="background-color: #f2f4f7;">
<tr><td align="center" style="padding: 24px 12px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0"
 style="max-width: 600px; background-color: #ffffff; border: 1px solid #dfe3e8;
 border-radius: 8px; border-collapse: separate;">
<tr><td style="padding: 22px 28px; background-color: #1f2a37; border-radius: 8px 8px 0 0;
 {{ font }}">
<div id="dealer" style="font-size: 20px; line-height: 26px; font-weight: 700; color: #ffffff;
 word-break: break-word;">{{ dealer or "Vehicle inspection" }}</div>
{%- if dealer %}
<div style="padding-top: 2px; font-size: 13px; line-height: 18px; color: #c3cbd6;">
{{- band | default("Vehicle inspection") }}</div>
{%- endif %}
</td></tr>
"""

_CARD_BOTTOM = """\
</table>
</td></tr>
</table>
</body>
</html>
"""

# The follow-up's headline stays a bare <h2> that takes its size from its cell (tests read
# it as is).
DEFAULT_HTML = _FOLLOW_UP_FACTS + _FONT + """\
{%- set badge = {"session.completed": "background-color: #e3f4e8; color: #17663a;",
                 "session.expired": "background-color: #fdf0d9; color: #8a4a00;",
                 "session.invalid": "background-color: #fde6e6; color: #9b1c1c;",
                 "tracking.not_found": "background-color: #fde6e6; color: #9b1c1c;"
                 }.get(type, "background-color: #e6edfb; color: #1e429f;") %}
{%- macro section(title) %}
<tr><td style="padding: 20px 28px 6px 28px; {{ font }} font-size: 12px; font-weight: 700;
 letter-spacing: 0.08em; text-transform: uppercase; color: #5b6473;">{{ title }}</td></tr>
{%- endmacro %}
{%- macro row(label, value, mono=false) %}
<tr>
<td width="96" valign="top" style="padding: 7px 12px 7px 0; border-top: 1px solid #eceef1;
 {{ font }} font-size: 14px; line-height: 20px; color: #5b6473;">{{ label }}</td>
<td valign="top" style="padding: 7px 0; border-top: 1px solid #eceef1;
 {{ "font-family: Menlo, Consolas, Liberation Mono, monospace;" if mono else font }}
 font-size: 14px; line-height: 20px; color: #1a202c; word-break: break-word;">{{ value }}</td>
</tr>
{%- endmacro -%}
{%- set preview = headline ~ ": " ~ (vehicle_description or session_key)
                  ~ (" · " ~ dealer if dealer else "") -%}
""" + _CARD_TOP + """\
<tr><td style="padding: 8px 28px 0 28px; {{ font }} font-size: 16px; color: #1a202c;">
<h2>{{ headline }}</h2>
</td></tr>
<tr><td style="padding: 0 28px; {{ font }}">
<span style="display: inline-block; padding: 3px 10px; border-radius: 999px; {{ badge }}
 font-size: 12px; line-height: 18px; font-weight: 700; letter-spacing: 0.04em;">
{{- status or "UNKNOWN" }}</span>
</td></tr>
{{ section("Vehicle") }}
<tr><td style="padding: 0 28px;">
{%- if vehicle_description %}
<div style="padding-bottom: 10px; {{ font }} font-size: 18px; line-height: 24px;
 font-weight: 600; color: #1a202c;">{{ vehicle_description }}
{%- if car.trim %}
<div style="font-size: 14px; line-height: 20px; font-weight: 400; color: #5b6473;">
{{- car.trim }}</div>
{%- endif %}
</div>
{%- else %}
<div style="padding-bottom: 10px; {{ font }} font-size: 15px; line-height: 22px;
 color: #5b6473;">Not captured yet</div>
{%- endif %}
{%- if car.vin or odometer or colours %}
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">
{%- if car.vin %}{{ row("VIN", car.vin, mono=true) }}{% endif %}
{%- if odometer %}{{ row("Odometer", odometer) }}{% endif %}
{%- if colours %}{{ row("Colours", colours) }}{% endif %}
</table>
{%- endif %}
</td></tr>
{{ section("Inspection") }}
<tr><td style="padding: 0 28px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">
{{- row("Session", session_key, mono=true) }}
{{- row("Started", inspect_started_at | utc_time or "Not recorded") }}
{{- row("Finished", inspect_ended_at | utc_time or "Not recorded") }}
</table>
</td></tr>
{%- if link %}
<tr><td style="padding: 24px 28px 4px 28px;">
<table role="presentation" cellpadding="0" cellspacing="0" border="0"><tr>
<td align="center" bgcolor="#1d4ed8" style="border-radius: 6px;">
<a id="link" href="{{ link }}" target="_blank" style="display: inline-block;
 padding: 12px 22px; {{ font }} font-size: 15px; line-height: 20px; font-weight: 600;
 color: #ffffff; text-decoration: none; border-radius: 6px;">{{ link_label }}</a>
</td></tr></table>
</td></tr>
<tr><td style="padding: 8px 28px 0 28px; {{ font }} font-size: 12px; line-height: 18px;
 color: #5b6473; word-break: break-all;">Or open <a href="{{ link }}" target="_blank"
 style="color: #1d4ed8;">{{ link }}</a></td></tr>
{%- endif %}
<tr><td style="padding: 24px 28px 22px 28px;">
<div style="border-top: 1px solid #eceef1; padding-top: 14px; {{ font }} font-size: 12px;
 line-height: 18px; color: #6b7280;">Sent by pave-tracker{{ " for " ~ dealer if dealer }}
 about inspection {{ session_key }}.</div>
</td></tr>
""" + _CARD_BOTTOM


# The customer reminder (`session.reminder`) speaks to the customer PAVE's link was sent
# to: no statuses or session keys but a reference in the footer. The customer's name is
# the dealer's `customer_name` metadata, else the name PAVE's text message went to; the
# dealer as in the follow-up. Only the capture link (an http(s) one) makes a button: the
# customer has no use for the report.
_REMINDER_FACTS = _SENDER_FACTS + """\
{%- set named = metadata.customer_name if metadata is mapping else none %}
{%- set customer = (named if named is string and named | trim else sms.to_name) %}
{%- set customer = customer | trim if customer is string and customer | trim else none %}
{%- set link = capture_url | web_url %}
{%- set again = reminder is number and reminder >= 2 %}
{%- set car_name = vehicle_description or ("VIN " ~ car.vin if car.vin) %}
{%- set your_car = "your " ~ vehicle_description if vehicle_description
                   else "your vehicle (VIN " ~ car.vin ~ ")" if car.vin else "your vehicle" %}
{%- set headline = "Your vehicle inspection is still waiting" if again
                   else "Finish your vehicle inspection" %}
{%- set ask = (dealer ~ " is still waiting for the photo inspection of " ~ your_car ~ ".")
              if again and dealer else
              ("We are still waiting for the photo inspection of " ~ your_car ~ ".")
              if again else
              (dealer ~ " asked you for a short photo inspection of " ~ your_car ~ ".")
              if dealer else
              ("You were asked for a short photo inspection of " ~ your_car ~ ".") %}
{%- set how = "It only takes a few minutes with your phone's camera." %}
{%- set no_link = "Please open the inspection link " ~ (dealer or "the dealer")
                  ~ " sent you earlier, or ask them for a new one." -%}
"""

REMINDER_SUBJECT = _REMINDER_FACTS + """\
{{ "Still waiting: your vehicle inspection" if again else "Finish your vehicle inspection" }}
{{- " for " ~ dealer if dealer }}"""

REMINDER_TEXT = _REMINDER_FACTS + """\
{{ "Hi " ~ customer if customer else "Hello" }},

{{ ask }} {{ how }}
{% if link %}
Finish your inspection:
{{ link }}
{% else %}
{{ no_link }}
{% endif %}
{%- if car_name %}
Vehicle: {{ car_name }}{{ " (" ~ car.trim ~ ")" if car.trim and vehicle_description }}
{% endif %}
{{ "Thank you,\n" ~ dealer if dealer else "Thank you." }}

Reference {{ session_key }}
"""

REMINDER_HTML = _REMINDER_FACTS + _FONT + """\
{%- set copy = font ~ " font-size: 16px; line-height: 24px; color: #1a202c;" -%}
{%- set preview = ask ~ " " ~ how -%}
""" + _CARD_TOP + """\
<tr><td style="padding: 28px 28px 0 28px; {{ font }}">
<h1 style="margin: 0; font-size: 22px; line-height: 30px; font-weight: 700; color: #1a202c;
 word-break: break-word;">{{ headline }}</h1>
</td></tr>
<tr><td id="message" style="padding: 16px 28px 0 28px; {{ copy }} word-break: break-word;">
<p style="margin: 0 0 12px 0;">{{ "Hi " ~ customer if customer else "Hello" }},</p>
<p style="margin: 0 0 12px 0;">{{ ask }}</p>
<p style="margin: 0;">{{ how }}</p>
</td></tr>
{%- if car_name %}
<tr><td style="padding: 20px 28px 0 28px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0"
 style="background-color: #f6f7f9; border: 1px solid #eceef1; border-radius: 6px;
 border-collapse: separate;">
<tr><td id="vehicle" style="padding: 12px 16px; {{ font }} word-break: break-word;">
<div style="font-size: 12px; line-height: 18px; font-weight: 700; letter-spacing: 0.08em;
 text-transform: uppercase; color: #5b6473;">Your vehicle</div>
<div style="font-size: 16px; line-height: 24px; font-weight: 600; color: #1a202c;">
{{- car_name }}</div>
{%- if car.trim and vehicle_description %}
<div style="font-size: 14px; line-height: 20px; color: #5b6473;">{{ car.trim }}</div>
{%- endif %}
</td></tr>
</table>
</td></tr>
{%- endif %}
{%- if link %}
<tr><td style="padding: 24px 28px 0 28px;">
<table role="presentation" cellpadding="0" cellspacing="0" border="0"><tr>
<td align="center" bgcolor="#1d4ed8" style="border-radius: 6px;">
<a id="link" href="{{ link }}" target="_blank" style="display: inline-block;
 padding: 14px 26px; {{ font }} font-size: 16px; line-height: 20px; font-weight: 600;
 color: #ffffff; text-decoration: none; border-radius: 6px;">Finish your inspection</a>
</td></tr></table>
</td></tr>
<tr><td style="padding: 12px 28px 0 28px; {{ font }} font-size: 12px; line-height: 18px;
 color: #5b6473; word-break: break-all;">Button not working? Open <a href="{{ link }}"
 target="_blank" style="color: #1d4ed8;">{{ link }}</a></td></tr>
{%- else %}
<tr><td id="no-link" style="padding: 20px 28px 0 28px; {{ copy }} word-break: break-word;">
{{- no_link }}</td></tr>
{%- endif %}
<tr><td style="padding: 24px 28px 0 28px; {{ copy }} word-break: break-word;">
{%- if dealer %}Thank you,<br>{{ dealer }}{% else %}Thank you.{% endif %}</td></tr>
<tr><td style="padding: 24px 28px 22px 28px;">
<div style="border-top: 1px solid #eceef1; padding-top: 14px; {{ font }} font-size: 12px;
 line-height: 18px; color: #6b7280; word-break: break-word;">You are receiving this because
 {{ dealer or "a dealer" }} asked you for a vehicle inspection.<br>Reference
 {{ session_key }}</div>
</td></tr>
""" + _CARD_BOTTOM


# The store manager's daily digest (`account.digest`): the day in four figures, what became
# of the inspections that ended, and who to call (the stalled sessions, with the customer,
# the vehicle, how long and the capture link to send again). Read on a phone: one column,
# the figures two by two.
_DIGEST_FACTS = """\
{%- set dealer = dealer_name or account %}
{%- set zone = timezone or "UTC" %}
{%- set rate = completion_rate | percent %}
{%- set median = median_time_to_complete | duration %}
{%- set results = outcomes if outcomes is mapping else {} %}
{%- set ended_rows = [("Completed", results.completed), ("Expired", results.expired),
                      ("Invalid", results.invalid), ("Ended otherwise", results.other),
                      ("Never found at PAVE", results.not_found),
                      ("Given up (too old)", results.gave_up),
                      ("Stopped by hand", results.stopped)] %}
{%- set listed = stalled if stalled is sequence else [] %}
{%- set more = (stalled_count or 0) - listed | length %}
{%- set since = period.from | local_time(zone) if period is mapping else "" %}
{%- set until = period.to | local_time(zone) if period is mapping else "" -%}
{%- macro who(item) -%}
{{ item.customer_name or item.session_key }}
{%- endmacro %}
{%- macro car(item) -%}
{%- set v = item.vehicle if item.vehicle is mapping else {} -%}
{{ [v.year, v.make, v.model] | select | join(" ") or ("VIN " ~ v.vin if v.vin) or "" }}
{%- endmacro -%}
"""

DIGEST_SUBJECT = _DIGEST_FACTS + """\
{{ dealer }}: {{ results.completed or 0 }} inspection{{ "" if results.completed == 1 else "s" }}
 completed, {{ stalled_count or 0 }} stalled ({{ date | long_date }})"""

DIGEST_TEXT = _DIGEST_FACTS + """\
Daily inspection digest: {{ dealer }}
{{ date | long_date }}, the 24 hours from {{ since }} to {{ until }} ({{ zone }})

Completed:          {{ results.completed or 0 }}
Completion rate:    {{ rate }}{{ " of " ~ ended ~ " that ended" if ended }}
Median to complete: {{ median }}
Stalled now:        {{ stalled_count or 0 }}

New inspections tracked: {{ tracked or 0 }}
In progress now:         {{ in_progress or 0 }}
{%- if ended %}

How the {{ ended }} that ended did:
{%- for label, count in ended_rows if count %}
  {{ label }}: {{ count }}
{%- endfor %}
{%- endif %}
{% if listed %}
Stalled: who to call
{%- for item in listed %}
- {{ who(item) }}{{ ", " ~ car(item) if car(item) }}
  {{ item.status }} for {{ item.stalled_for | duration }} ({{ item.session_key }})
  {%- if item.capture_url | web_url %}
  Link: {{ item.capture_url | web_url }}
  {%- endif %}
{%- endfor %}
{%- if more > 0 %}
... and {{ more }} more: `pave-tracker stalled --account {{ account }}`
{%- endif %}
{% else %}
Nothing is stalled.
{% endif %}
Sent by pave-tracker for {{ dealer }}.
"""

DIGEST_HTML = _DIGEST_FACTS + _FONT + """\
{%- set band = "Daily inspection digest" %}
{%- set day_line = "Your inspections, " ~ date | long_date %}
{%- set preview = (results.completed or 0) ~ " completed · " ~ rate ~ " completion · "
                  ~ (stalled_count or 0) ~ " stalled" %}
{%- macro figure(id, label, value) %}
<td id="{{ id }}" width="50%" valign="top" style="padding: 6px;">
<div style="padding: 14px 14px 12px 14px; background-color: #f6f7f9;
 border: 1px solid #eceef1; border-radius: 6px; {{ font }}">
<div style="font-size: 28px; line-height: 34px; font-weight: 700; color: #1a202c;">
{{- value }}</div>
<div style="padding-top: 2px; font-size: 13px; line-height: 18px; color: #4b5563;">
{{- label }}</div>
</div>
</td>
{%- endmacro %}
{%- macro section(title) %}
<tr><td style="padding: 22px 28px 6px 28px; {{ font }}">
<h2 style="margin: 0; font-size: 13px; line-height: 18px; font-weight: 700;
 letter-spacing: 0.08em; text-transform: uppercase; color: #4b5563;">{{ title }}</h2>
</td></tr>
{%- endmacro %}
{%- macro row(label, value) %}
<tr>
<td valign="top" style="padding: 8px 12px 8px 0; border-top: 1px solid #eceef1;
 {{ font }} font-size: 15px; line-height: 20px; color: #374151;">{{ label }}</td>
<td align="right" valign="top" style="padding: 8px 0; border-top: 1px solid #eceef1;
 {{ font }} font-size: 15px; line-height: 20px; font-weight: 600; color: #1a202c;">
{{- value }}</td>
</tr>
{%- endmacro -%}
""" + _CARD_TOP + """\
<tr><td style="padding: 24px 28px 0 28px; {{ font }}">
<h1 style="margin: 0; font-size: 22px; line-height: 30px; font-weight: 700; color: #1a202c;">
{{- day_line }}</h1>
<p style="margin: 4px 0 0 0; font-size: 14px; line-height: 20px; color: #4b5563;">The 24 hours
 from {{ since }} to {{ until }} ({{ zone }})</p>
</td></tr>
<tr><td style="padding: 14px 22px 0 22px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">
<tr>{{ figure("completed", "Completed", results.completed or 0) }}
{{- figure("rate", "Completion rate" ~ (" of " ~ ended ~ " ended" if ended), rate) }}</tr>
<tr>{{ figure("median", "Median time to complete", median) }}
{{- figure("stalled-count", "Stalled now", stalled_count or 0) }}</tr>
</table>
</td></tr>
{{ section("The day") }}
<tr><td style="padding: 0 28px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">
{{- row("New inspections tracked", tracked or 0) }}
{{- row("In progress now", in_progress or 0) }}
{%- for label, count in ended_rows if count %}{{ row(label, count) }}{% endfor %}
</table>
</td></tr>
{{ section("Stalled: who to call") }}
<tr><td id="stalled" style="padding: 0 28px;">
{%- for item in listed %}
<div style="padding: 10px 0; border-top: 1px solid #eceef1; {{ font }} word-break: break-word;">
<div style="font-size: 16px; line-height: 22px; font-weight: 600; color: #1a202c;">
{{- who(item) }}</div>
{%- if car(item) %}
<div style="font-size: 14px; line-height: 20px; color: #374151;">{{ car(item) }}</div>
{%- endif %}
<div style="font-size: 14px; line-height: 20px; color: #4b5563;"><strong
 style="color: #8a4a00;">{{ item.status }}</strong> for {{ item.stalled_for | duration }}
 · {{ item.session_key }}
{%- if item.capture_url | web_url %} · <a href="{{ item.capture_url | web_url }}"
 target="_blank" style="color: #1d4ed8;">capture link</a>{% endif %}</div>
</div>
{%- else %}
<div style="padding: 10px 0; border-top: 1px solid #eceef1; {{ font }} font-size: 15px;
 line-height: 22px; color: #374151;">Nothing is stalled.</div>
{%- endfor %}
{%- if more > 0 %}
<div style="padding: 10px 0; border-top: 1px solid #eceef1; {{ font }} font-size: 14px;
 line-height: 20px; color: #4b5563;">… and {{ more }} more: <code>pave-tracker stalled
 <span style="white-space: nowrap;">--account {{ account }}</span></code></div>
{%- endif %}
</td></tr>
<tr><td style="padding: 24px 28px 22px 28px;">
<div style="border-top: 1px solid #eceef1; padding-top: 14px; {{ font }} font-size: 12px;
 line-height: 18px; color: #6b7280;">Sent by pave-tracker for {{ dealer }}, each day at
 {{ period.to | local_clock(zone) if period is mapping }}.</div>
</td></tr>
""" + _CARD_BOTTOM


class EmailTemplates(NamedTuple):
    subject: str
    text: str
    html: str


FOLLOW_UP_TEMPLATES = EmailTemplates(DEFAULT_SUBJECT, DEFAULT_TEXT, DEFAULT_HTML)
REMINDER_TEMPLATES = EmailTemplates(REMINDER_SUBJECT, REMINDER_TEXT, REMINDER_HTML)
DIGEST_TEMPLATES = EmailTemplates(DIGEST_SUBJECT, DIGEST_TEXT, DIGEST_HTML)
_BUILT_IN_BY_EVENT = {"session.reminder": REMINDER_TEMPLATES,
                      "account.digest": DIGEST_TEMPLATES}


def built_in_templates(event_type: object) -> EmailTemplates:
    """The built-in e-mail for an event: the customer's reminder, the manager's digest,
    else the follow-up."""
    return _BUILT_IN_BY_EVENT.get(str(event_type), FOLLOW_UP_TEMPLATES)


def web_url(value: object) -> str | None:
    """An absolute http(s) URL, or None: never a `javascript:` or half-made link."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    try:
        parts = urlsplit(url)
    except ValueError:  # `http://[oops`: a bad link leaves the message without one
        return None
    return url if parts.scheme.lower() in {"http", "https"} and parts.netloc else None


def utc_time(value: object) -> object:
    """`2021-05-25T11:56:05Z` as `25 May 2021, 11:56 UTC`; anything else as it came."""
    if not isinstance(value, str):
        return value
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def duration_filter(value: object) -> str:
    """Seconds as `1h 30m`; a dash when there is no figure."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return spell_duration(value)


def percent(value: object) -> str:
    """0.7234 as `72%`; a dash when there is no rate."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value * 100:.0f}%"


def _local(value: object, timezone: object) -> dt.datetime | None:
    if not isinstance(value, str) or not isinstance(timezone, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
        zone = zoneinfo.ZoneInfo(timezone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return None
    return moment.astimezone(zone) if moment.tzinfo is not None else None


def local_time(value: object, timezone: object = "UTC") -> object:
    """`2026-12-05T12:30:00Z` in America/Toronto as `Sat 5 Dec, 07:30`; anything else as
    it came."""
    moment = _local(value, timezone)
    return value if moment is None else f"{moment:%a} {moment.day} {moment:%b, %H:%M}"


def local_clock(value: object, timezone: object = "UTC") -> object:
    """The local time of day alone: `07:30`."""
    moment = _local(value, timezone)
    return value if moment is None else f"{moment:%H:%M}"


def long_date(value: object) -> object:
    """`2026-12-05` as `Saturday 5 December`; anything else as it came."""
    if not isinstance(value, str):
        return value
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return value
    return f"{day:%A} {day.day} {day:%B}"


def odometer_unit_filter(value: object) -> str:
    """PAVE's `KILOMETRES` and `MILES` as `km` and `mi` (another unit as written, in lower
    case); nothing when there is no unit."""
    if not isinstance(value, str):
        return ""
    return odometer_unit(value) or value.lower()


for _environment in (_plain, _html):
    _environment.filters.update(web_url=web_url, utc_time=utc_time,
                                odometer_unit=odometer_unit_filter, duration=duration_filter,
                                percent=percent, local_time=local_time,
                                local_clock=local_clock, long_date=long_date)


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

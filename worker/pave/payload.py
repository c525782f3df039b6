"""Reading PAVE's session JSON, tolerant of every quirk `pave/README.md` lists.

- PAVE's own sample is not valid JSON (a trailing comma): a strict parse is tried
  first, then the same with trailing commas removed, then JSON5 for a small answer.
- `odom_reading` may be an integer or a string with thousands separators ("100,945").
- Timestamps carry microseconds and a `Z`, or not.
- `vehicle` may be missing, null or partial; `inspect_*` times are null until they happen.
- Statuses are stored as sent: an unknown one is data, not an error.
- Fields we do not know are ignored.

What cannot be read as a session at all raises `PaveBadPayload` with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

import json5

from worker.errors import PaveBadPayload

MAX_STATUS_LENGTH = 64
MAX_LINK_LENGTH = 2000
# JSON5 is pure Python and runs in the event loop, at up to ~70 ms a kilobyte (98 KB took
# 6 s, 4 KB 0.25 s): only an answer of a session's size (PAVE's sample is 1.2 KB) gets it.
# Trailing commas, the one quirk PAVE is known for, are mended without it at any size.
LENIENT_PARSE_MAX_BYTES = 4_000
# Each trailing comma mended costs a strict parse up to it, ~50 ms a million characters at
# worst: this many characters re-parsed in all bounds that time, however many commas an
# answer has (0.3 s for the worst 2 MB answer, whose strict parse alone takes 0.08 s).
TRAILING_COMMA_BUDGET = 4_000_000
_INTEGER_VEHICLE_FIELDS = ("vehicle_id", "year", "odom_reading")
_THOUSANDS = re.compile(r"[,\s_']")


@dataclass(frozen=True)
class SessionSnapshot:
    """One answer from `GET /sessions/{key}`, reduced to what the tracker keeps."""

    session_key: str
    status: str
    active: bool | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    inspect_started_at: dt.datetime | None = None
    inspect_ended_at: dt.datetime | None = None
    vehicle: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    # The customer's capture link (PAVE's `redirect_url`), for reminders.
    redirect_url: str | None = None
    # PAVE's inspection results (`GET /sessions/{key}/results`), when FETCH_RESULTS asks.
    results: dict[str, Any] | None = None


def decode_json(body: bytes | str) -> Any:
    """Strict JSON; else strict JSON once its trailing commas are taken out (PAVE's
    published sample has one); else JSON5, if the answer is small enough."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        pass
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise PaveBadPayload(f"not JSON: {_short(exc)}") from None
    try:
        return loads_without_trailing_commas(text)
    except RecursionError:
        raise PaveBadPayload("not JSON: nested too deeply") from None
    except ValueError as exc:
        if len(body) > LENIENT_PARSE_MAX_BYTES:
            raise PaveBadPayload(
                f"not JSON ({_short(exc)}), and at {len(body)} bytes too large for the "
                f"lenient parse (at most {LENIENT_PARSE_MAX_BYTES})") from None
    try:
        return json5.loads(text)
    except Exception as exc:  # json5 raises more than ValueError on some garbage
        raise PaveBadPayload(f"not JSON: {_short(exc)}") from None


def loads_without_trailing_commas(text: str) -> Any:
    """`json.loads`, taking out each comma it stops at before a `}` or `]`. The parser
    finds them, so a comma inside a string is never touched."""
    budget = TRAILING_COMMA_BUDGET
    while True:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            budget -= exc.pos
            comma = _trailing_comma(text, exc)
            if comma is None or budget < 0:
                raise
            text = text[:comma] + text[comma + 1:]


def _trailing_comma(text: str, error: json.JSONDecodeError) -> int | None:
    """Where the comma is that `error` is about, if it is one before a `}` or `]`."""
    if error.msg.startswith("Illegal trailing comma"):  # Python 3.13 and later say so
        return error.pos
    if text[error.pos:error.pos + 1] in ("}", "]"):  # earlier ones stop at the bracket
        before = text[:error.pos].rstrip(" \t\n\r")
        if before.endswith(","):
            return len(before) - 1
    return None


def parse_session(body: bytes | str, *, expected_key: str | None = None) -> SessionSnapshot:
    document = decode_json(body)
    if not isinstance(document, dict):
        raise PaveBadPayload(f"expected a JSON object, got {type(document).__name__}")

    status = document.get("status")
    if not isinstance(status, str) or not status.strip():
        raise PaveBadPayload("no status in the session")
    status = status.strip()
    if len(status) > MAX_STATUS_LENGTH:
        raise PaveBadPayload(f"status longer than {MAX_STATUS_LENGTH} characters")

    session_key = document.get("session_key", expected_key)
    if not isinstance(session_key, str):
        raise PaveBadPayload("session_key is not a string")
    if expected_key is not None and session_key != expected_key:
        raise PaveBadPayload("the answer is for another session_key")

    active = document.get("active")
    return SessionSnapshot(
        session_key=session_key,
        status=status,
        active=active if isinstance(active, bool) else None,
        created_at=parse_timestamp(document.get("created_at")),
        updated_at=parse_timestamp(document.get("updated_at")),
        inspect_started_at=parse_timestamp(document.get("inspect_started_at")),
        inspect_ended_at=parse_timestamp(document.get("inspect_ended_at")),
        vehicle=normalise_vehicle(document.get("vehicle")),
        options=document.get("options") if isinstance(document.get("options"), dict) else None,
        redirect_url=parse_link(document.get("redirect_url")),
    )


def parse_link(value: object) -> str | None:
    """An http(s) URL of a sane length, or None: the link goes into e-mails and leads."""
    if isinstance(value, str) and value.startswith(("https://", "http://")) \
            and len(value) <= MAX_LINK_LENGTH and value.isprintable() and " " not in value:
        return value
    return None


def parse_results(body: bytes | str) -> dict[str, Any]:
    """The results document is opaque to the tracker: any JSON object is passed on."""
    document = decode_json(body)
    if not isinstance(document, dict):
        raise PaveBadPayload(f"results: expected a JSON object, got {type(document).__name__}")
    return document


def parse_timestamp(value: object) -> dt.datetime | None:
    """PAVE's UTC times, with or without microseconds and `Z`; anything else is None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def parse_integer(value: object) -> int | None:
    """An integer, or a string of one with thousands separators ("100,945")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        digits = _THOUSANDS.sub("", value.strip())
        if digits.isdecimal() and len(digits) <= 18:
            return int(digits)
    return None


def normalise_vehicle(value: object) -> dict[str, Any] | None:
    """Keep every field PAVE sent; make the documented integers integers where possible."""
    if not isinstance(value, dict) or not value:
        return None
    vehicle = dict(value)
    for name in _INTEGER_VEHICLE_FIELDS:
        if name in vehicle and vehicle[name] is not None:
            number = parse_integer(vehicle[name])
            if number is not None:
                vehicle[name] = number
    return vehicle


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__

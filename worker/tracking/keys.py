"""Session keys: refused before they reach a database or a URL."""

from __future__ import annotations

import re

from worker.errors import BadInput

SESSION_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{3,64}")


def validate_session_key(key: object) -> str:
    if not isinstance(key, str) or not SESSION_KEY_PATTERN.fullmatch(key):
        shown = repr(key) if len(repr(key)) <= 70 else repr(key)[:67] + "..."
        raise BadInput(
            f"bad session key {shown}: 3 to 64 letters, digits, '-' or '_'"
        )
    return key

"""What leases on sessions and on deliveries share: their tokens."""

from __future__ import annotations

import uuid


def new_token() -> str:
    return str(uuid.uuid4())

"""The list endpoints' `limit` and `offset`, and how they tell that another page follows."""

from __future__ import annotations

from collections.abc import Sized
from typing import Annotated

from fastapi import Query

PAGE_SIZE = 100
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


def next_offset(found: Sized, *, limit: int, offset: int) -> int | None:
    """`found` holds up to `limit + 1` rows: the one past the page says there is more."""
    return offset + limit if len(found) > limit else None

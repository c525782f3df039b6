"""What PAVE's vehicle fields mean to a reader, for every message that shows them."""

from __future__ import annotations

# PAVE writes `odom_unit` as `KILOMETRES` (the sample) or `MILES`.
ODOMETER_UNITS = {"kilometres": "km", "kilometers": "km", "km": "km",
                  "miles": "mi", "mi": "mi"}


def odometer_unit(value: object) -> str | None:
    """`km` or `mi` for PAVE's `odom_unit`; None when it names neither."""
    return ODOMETER_UNITS.get(value.strip().lower()) if isinstance(value, str) else None

"""Durations in settings: seconds, or written `2h`, `30m`, `1d`, `1h30m`, `45s`; garbage
refused naming the variable."""

from __future__ import annotations

import pytest

from worker.config import load_settings
from worker.errors import SettingsError


@pytest.mark.parametrize("written, seconds", [
    ("90", 90), ("0.25", 0.25), ("45s", 45), ("30m", 1800), ("2h", 7200), ("1d", 86400),
    ("1h30m", 5400), ("1.5h", 5400), ("1d2h", 93600), (" 2H ", 7200),
])
def test_a_duration_may_be_written_with_units(written: str, seconds: float) -> None:
    settings = load_settings(_env_file=None, poll_interval=written)
    assert settings.poll_interval == seconds


def test_the_retry_schedule_takes_units_too() -> None:
    settings = load_settings(_env_file=None, delivery_retry_schedule="5s,5m,30m,2h,1d")
    assert settings.delivery_retry_schedule == (5, 300, 1800, 7200, 86400)


@pytest.mark.parametrize("written", ["2x", "h", "-5m", "2m3h", "1 h", "5m5", "0s", "nan"])
def test_garbage_durations_are_refused_naming_the_variable(written: str) -> None:
    with pytest.raises(SettingsError, match="^bad setting POLL_INTERVAL: "):
        load_settings(_env_file=None, poll_interval=written)


def test_the_nudge_settings() -> None:
    settings = load_settings(_env_file=None, stall_after="idle=1d,STARTED=2h",
                             remind_after="4h,1d,2d", quiet_hours="21:00-08:00",
                             remind_statuses="IDLE,CONFIRM")
    assert settings.stall_after == {"IDLE": 86400, "STARTED": 7200}
    assert settings.remind_after == (14400, 86400, 172800)
    assert [t.isoformat() for t in settings.quiet_hours or ()] == ["21:00:00", "08:00:00"]
    assert settings.remind_statuses == {"IDLE", "CONFIRM"}


@pytest.mark.parametrize("name, value, reason", [
    ("remind_after", "1d,4h", "durations must grow"),
    ("remind_after", "4h,4h", "durations must grow"),
    ("remind_after", "4h,soon", "REMIND_AFTER"),
    ("remind_after", "0,4h", "more than zero"),
    ("quiet_hours", "21:00", "like 21:00-08:00"),
    ("quiet_hours", "9pm-8am", "like 21:00-08:00"),
    ("quiet_hours", "08:00-08:00", "like 21:00-08:00"),
    ("stall_after", "IDLE=1d,STARTED", "STATUS=duration pairs"),
])
def test_garbage_nudge_settings_are_refused_naming_the_variable(
        name: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, **{name: value})
    assert str(refused.value).startswith(f"bad setting {name.upper()}")
    assert reason in str(refused.value)

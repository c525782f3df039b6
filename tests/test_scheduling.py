import random

from tests.conftest import make_settings
from worker.tracking.scheduling import error_backoff_delay, next_poll_delay

SETTINGS = make_settings("sqlite://", poll_interval=60, poll_interval_idle=300,
                         error_backoff_cap=1800, dispatch_interval=5)


def test_idle_sessions_are_polled_more_slowly_than_ones_in_progress() -> None:
    rng = random.Random(1)
    idle = [next_poll_delay("IDLE", settings=SETTINGS, rng=rng) for _ in range(200)]
    unseen = [next_poll_delay(None, settings=SETTINGS, rng=rng) for _ in range(200)]
    busy = [next_poll_delay("PROCESS", settings=SETTINGS, rng=rng) for _ in range(200)]
    assert min(idle) >= 270 - 5 and max(idle) <= 300 - 5
    assert min(unseen) >= 270 - 5
    assert min(busy) >= 54 - 5 and max(busy) <= 60 - 5
    assert len(set(busy)) > 100  # jittered, not all alike


def test_the_interval_is_the_longest_gap_even_waiting_for_the_next_tick() -> None:
    """Due at the delay, leased at the latest one DISPATCH_INTERVAL later: never later
    than POLL_INTERVAL after the last poll."""
    rng = random.Random(3)
    for _ in range(500):
        assert next_poll_delay("STARTED", settings=SETTINGS, rng=rng) + 5 <= 60


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    rng = random.Random(2)
    for errors, ceiling in [(1, 120), (2, 240), (3, 480), (10, 1800), (500, 1800)]:
        delays = [error_backoff_delay(errors, settings=SETTINGS, rng=rng) for _ in range(300)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range
        assert min(delays) < ceiling * 0.2


def test_sub_second_intervals_work() -> None:
    fast = make_settings("sqlite://", poll_interval=0.2, poll_interval_idle=0.5,
                         dispatch_interval=0.05)
    assert 0.13 <= next_poll_delay("STARTED", settings=fast, rng=random.Random()) <= 0.15


def test_an_interval_shorter_than_a_tick_polls_at_every_tick() -> None:
    slow_ticks = make_settings("sqlite://", poll_interval=1, dispatch_interval=5)
    assert next_poll_delay("STARTED", settings=slow_ticks, rng=random.Random()) == 0

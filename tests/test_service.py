"""Tracking and untracking, on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from worker.db import utcnow
from worker.errors import BadInput
from worker.models import TrackedSession, Tracking
from worker.tracking.requests import TrackRequest
from worker.tracking.service import list_sessions, track_sessions, untrack_sessions


def track(sessions: sessionmaker[Session], *requests: TrackRequest):  # type: ignore[no-untyped-def]
    with sessions.begin() as db:
        return track_sessions(db=db, requests=list(requests), now=utcnow())


def get(sessions: sessionmaker[Session], key: str) -> TrackedSession:
    with sessions() as db:
        return db.scalars(select(TrackedSession).where(TrackedSession.session_key == key)).one()


def test_tracking_is_idempotent_and_merges_metadata(sessions: sessionmaker[Session]) -> None:
    first = track(sessions, TrackRequest("ABC-1", {"dealer": "Main"}), TrackRequest("ABC-2"))
    assert (first.added, first.unchanged) == (2, 0)
    again = track(sessions, TrackRequest("ABC-1", {"email": "a@b.co"}), TrackRequest("ABC-2"))
    assert (again.added, again.updated, again.unchanged) == (0, 1, 1)
    assert get(sessions, "ABC-1").user_metadata == {"dealer": "Main", "email": "a@b.co"}
    with sessions() as db:
        assert db.scalar(select(func.count()).select_from(TrackedSession)) == 2


def test_duplicate_keys_in_one_request_are_one_session(sessions: sessionmaker[Session]) -> None:
    summary = track(sessions, TrackRequest("ABC-1", {"a": "1"}), TrackRequest("ABC-1", {"b": "2"}))
    assert summary.added == 1
    assert get(sessions, "ABC-1").user_metadata == {"a": "1", "b": "2"}


def test_untracked_sessions_can_be_tracked_again(sessions: sessionmaker[Session]) -> None:
    track(sessions, TrackRequest("ABC-1"))
    with sessions.begin() as db:
        assert untrack_sessions(db=db, keys=["ABC-1"], now=utcnow()) == 1
    stopped = get(sessions, "ABC-1")
    assert stopped.tracking is Tracking.STOPPED and stopped.next_poll_at is None
    assert track(sessions, TrackRequest("ABC-1")).restarted == 1
    restarted = get(sessions, "ABC-1")
    assert restarted.tracking is Tracking.ACTIVE and restarted.next_poll_at is not None


def test_done_sessions_stay_done(sessions: sessionmaker[Session]) -> None:
    track(sessions, TrackRequest("ABC-1"))
    with sessions.begin() as db:
        db.scalars(select(TrackedSession)).one().tracking = Tracking.DONE
    assert track(sessions, TrackRequest("ABC-1")).unchanged == 1
    assert get(sessions, "ABC-1").tracking is Tracking.DONE


def test_untracking_an_unknown_key_changes_nothing(sessions: sessionmaker[Session]) -> None:
    track(sessions, TrackRequest("ABC-1"))
    with pytest.raises(BadInput, match="not tracked: NOPE-1"):
        with sessions.begin() as db:
            untrack_sessions(db=db, keys=["ABC-1", "NOPE-1"], now=utcnow())
    assert get(sessions, "ABC-1").tracking is Tracking.ACTIVE


def test_list_filters(sessions: sessionmaker[Session]) -> None:
    track(sessions, TrackRequest("ABC-1"), TrackRequest("ABC-2"), TrackRequest("ABC-3"))
    with sessions.begin() as db:
        untrack_sessions(db=db, keys=["ABC-2"], now=utcnow())
        db.scalars(select(TrackedSession).where(TrackedSession.session_key == "ABC-3")) \
            .one().status = "IDLE"
    with sessions() as db:
        assert [s.session_key for s in list_sessions(db=db)] == ["ABC-1", "ABC-2", "ABC-3"]
        assert [s.session_key for s in list_sessions(db=db, tracking=Tracking.STOPPED)] == \
            ["ABC-2"]
        assert [s.session_key for s in list_sessions(db=db, status="IDLE")] == ["ABC-3"]
        assert len(list_sessions(db=db, limit=2)) == 2


def test_many_keys_in_chunks(sessions: sessionmaker[Session]) -> None:
    requests = [TrackRequest(f"KEY-{n:05d}") for n in range(1200)]
    assert track(sessions, *requests).added == 1200
    assert track(sessions, *requests).unchanged == 1200


def test_untrack_never_overwrites_a_poll_recorded_meanwhile(pg_url: str) -> None:
    """A poll recording `done` while `untrack` runs: untrack waits for it and leaves
    `done` alone (it used to read without a lock and write `stopped` over it)."""
    import threading

    from tests.test_account_pause import wait_for_a_lock_wait
    from worker.db import session_factory

    sessions = session_factory(pg_url)
    track(sessions, TrackRequest("ABC-1"))
    poll = sessions()
    poll.begin()
    tracked = poll.scalars(select(TrackedSession).with_for_update()).one()
    tracked.tracking, tracked.status, tracked.next_poll_at = Tracking.DONE, "COMPLETE", None
    poll.flush()
    stopped: list[int] = []

    def untrack() -> None:
        with sessions.begin() as db:
            stopped.append(untrack_sessions(db=db, keys=["ABC-1"], now=utcnow()))

    thread = threading.Thread(target=untrack)
    thread.start()
    wait_for_a_lock_wait(pg_url)  # untrack is now waiting on the poll's row
    poll.commit()
    poll.close()
    thread.join(timeout=10)
    assert stopped == [0]
    with sessions() as db:
        assert db.scalars(select(TrackedSession)).one().tracking is Tracking.DONE

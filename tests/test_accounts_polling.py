"""Two PAVE accounts on the simulator, each polled with its own credentials: when PAVE
refuses one, that one stops within the batch that met the refusal and stays paused; the
other goes on at full speed. The same for a 429."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.helpers import Clock, add_session, tick
from worker.accounts import Account, Accounts
from worker.config import Settings
from worker.models import AccountPause, TrackedSession
from worker.pave.runtime import PollRuntime
from worker.pave.simulator import Simulator, running_simulator
from worker.tracking.polling import poll_leased_sessions

PER_ACCOUNT = 30
BATCH = 10


@pytest.fixture
def two_stores() -> Iterator[tuple[Simulator, Accounts]]:
    simulator = Simulator()
    for name in ("north", "south"):
        simulator.add_account(name, api_key=f"{name}-key", username=f"{name}-user",
                              api_secret=f"{name}-secret")
        for number in range(PER_ACCOUNT):
            simulator.add_session(f"{name.upper()}-{number:03d}", [("IDLE", None)],
                                  account=name)
    with running_simulator(simulator) as url:
        yield simulator, Accounts(tuple(
            Account(name=name, api_url=url, api_key=SecretStr(f"{name}-key"),
                    username=f"{name}-user", api_secret=SecretStr(f"{name}-secret"))
            for name in ("north", "south")))


def poll_rounds(sessions: sessionmaker[Session], settings: Settings, clock: Clock,
                accounts: Accounts, *, rounds: int = 1, between: float = 0) -> list[str]:
    """Tick and poll what it sent, `rounds` times, `between` seconds apart, through one
    worker thread's runtime; returns the accounts it opened a PAVE client for."""
    runtime = PollRuntime(settings, accounts)
    try:
        for _ in range(rounds):
            for ids, token in tick(sessions, settings, clock):
                poll_leased_sessions(ids=ids, lease_token=token, sessions=sessions,
                                     settings=settings, fetch=runtime.fetch, clock=clock)
            clock.advance(between)
        return runtime.opened_accounts
    finally:
        runtime.close()


def polls_by_account(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as db:
        rows = db.execute(select(TrackedSession.account, TrackedSession.poll_count)).all()
    counts: dict[str, int] = {}
    for account, polls in rows:
        counts[account] = counts.get(account, 0) + polls
    return counts


@pytest.mark.parametrize("fault", ["refused", "throttled"])
def test_one_accounts_fault_stops_that_account_alone(
    database_url: str, sessions: sessionmaker[Session],
    two_stores: tuple[Simulator, Accounts], fault: str,
) -> None:
    simulator, accounts = two_stores
    settings = make_settings(database_url, poll_batch_size=BATCH, poll_interval_idle=1,
                             poll_concurrency=1, auth_pause=600, rate_limit_pause=600)
    clock = Clock()
    with sessions.begin() as db:
        for name in ("north", "south"):
            for number in range(PER_ACCOUNT):
                add_session(db, f"{name.upper()}-{number:03d}", account=name,
                            next_poll_at=clock.now)
    if fault == "refused":
        simulator.refuse("north")
    else:
        simulator.throttle("north", retry_after=None)
    poll_rounds(sessions, settings, clock, accounts, rounds=3, between=1.5)

    asked = simulator.requests_by_account()
    # South: every session, every round. North: the batch that met the fault asked one
    # key (one request in flight at a time, and the gate closed behind it); its other
    # batches gave their sessions back unasked, and later rounds leased none of them.
    assert asked.get("south") == 3 * PER_ACCOUNT
    assert asked.get("north") == 1
    assert polls_by_account(sessions) == {"north": 1, "south": 3 * PER_ACCOUNT}
    with sessions() as db:
        pauses = {pause.account: pause for pause in db.scalars(select(AccountPause))}
    assert set(pauses) == {"north"}
    until = pauses["north"].paused_until
    assert until is not None and until > clock.now
    # North's sessions wait at the pause's end, not at the front of the due index.
    with sessions() as db:
        waiting = set(db.scalars(select(TrackedSession.next_poll_at)
                                 .where(TrackedSession.account == "north")))
    assert all(when is not None and when >= until for when in waiting)


def test_each_account_is_signed_with_its_own_credentials(
    sessions: sessionmaker[Session], database_url: str,
    two_stores: tuple[Simulator, Accounts], caplog: pytest.LogCaptureFixture,
) -> None:
    """A client per account: north's keys asked with south's credentials would answer
    404 (another account's session), so every poll succeeding shows whose were used. Each
    transition's log line says whose session it is."""
    caplog.set_level(logging.INFO, logger="worker.tracking.observations")
    simulator, accounts = two_stores
    settings = make_settings(database_url, poll_batch_size=BATCH)
    clock = Clock()
    with sessions.begin() as db:
        for name in ("north", "south"):
            for number in range(3):
                add_session(db, f"{name.upper()}-{number:03d}", account=name,
                            next_poll_at=clock.now)
    assert poll_rounds(sessions, settings, clock, accounts) == ["north", "south"]
    with sessions() as db:
        rows = db.scalars(select(TrackedSession)).all()
    assert {row.status for row in rows} == {"IDLE"}
    assert all(row.last_error is None for row in rows)
    assert simulator.requests_by_account() == {"default": 0, "north": 3, "south": 3}
    transitions = {(record.session_key, record.account) for record in caplog.records
                   if hasattr(record, "to")}
    assert ("NORTH-000", "north") in transitions and ("SOUTH-002", "south") in transitions


def test_a_session_of_an_account_no_longer_configured(
    sessions: sessionmaker[Session], database_url: str,
    two_stores: tuple[Simulator, Accounts], caplog: pytest.LogCaptureFixture,
) -> None:
    """Its account was taken out of the settings: nothing to sign with. It is refused
    like bad credentials (that account pauses), and the others go on. A client is opened
    for the accounts polled only."""
    simulator, accounts = two_stores
    settings = make_settings(database_url, poll_batch_size=BATCH)
    clock = Clock()
    with sessions.begin() as db:
        add_session(db, "GONE-1", account="west", next_poll_at=clock.now)
        add_session(db, "SOUTH-000", account="south", next_poll_at=clock.now)
    assert poll_rounds(sessions, settings, clock, accounts) == ["south"]
    with sessions() as db:
        rows = {row.session_key: row for row in db.scalars(select(TrackedSession))}
        pauses = list(db.scalars(select(AccountPause.account)))
    assert rows["SOUTH-000"].status == "IDLE"
    assert rows["GONE-1"].last_error == "auth: no account 'west' in the settings"
    assert pauses == ["west"]
    assert "account west is not in the settings" in caplog.text
    assert "refused the credentials" not in caplog.text


def test_a_tick_moves_a_paused_accounts_due_sessions_to_its_pause_end(
    sessions: sessionmaker[Session], database_url: str,
) -> None:
    """Left due, they would head the due index for the whole pause, read past by every
    tick and counted as backlog: the tick moves them to when the pause ends instead."""
    from worker.tracking.account import pause_account
    from worker.tracking.leasing import due_backlog

    settings = make_settings(database_url, poll_batch_size=BATCH)
    clock = Clock()
    with sessions.begin() as db:
        for number in range(5):
            add_session(db, f"NORTH-{number}", account="north", next_poll_at=clock.now)
            add_session(db, f"SOUTH-{number}", account="south", next_poll_at=clock.now)
        until = pause_account(db=db, account="north", reason="PAVE asked to slow down (429)",
                              until=clock.now + dt.timedelta(seconds=60))
    sent = tick(sessions, settings, clock)
    with sessions() as db:
        accounts = set(db.scalars(select(TrackedSession.account)
                                  .where(TrackedSession.id.in_(sent[0][0]))))
        north = set(db.scalars(select(TrackedSession.next_poll_at)
                               .where(TrackedSession.account == "north")))
        backlog, _ = due_backlog(db=db, now=clock.now)
    assert len(sent) == 1 and len(sent[0][0]) == 5 and accounts == {"south"}
    assert north == {until} and backlog == 0

"""Tenant isolation in the HTTP API: an account's token sees and changes its own
account's sessions and deliveries only. Another account's session or delivery answers
exactly as an unknown one does, and no answer to one account's token carries anything
of the other's; pushes are per account, with that account's push token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.helpers import add_session
from tests.test_outbox import WEBHOOK, complete
from worker.accounts import Account, Accounts
from worker.api.app import create_app
from worker.models import Delivery, Event, TrackedSession
from worker.pave.simulator import serving

GLOBAL = "global-token-0123456789"
TOKENS = {"north": "north-token-0123456789", "south": "south-token-0123456789"}
PUSH = {"north": "north-push-0123456789", "south": "south-push-0123456789"}
KEYS = {"north": ["NORTH-1", "NORTH-2"], "south": ["SOUTH-1", "SOUTH-2"]}


@dataclass
class Tenants:
    client: httpx.Client
    sessions: sessionmaker[Session]
    deliveries: dict[str, list[str]]
    polls: list[tuple[list[int], str]]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def two_accounts() -> Accounts:
    return Accounts(tuple(
        Account(name=name, dealer_name=f"{name.title()} Motors", api_url="http://127.0.0.1:9/v1",
                api_key=SecretStr(f"{name}-key"), api_token=SecretStr(f"{name}-pave-token"),
                api_tokens=(SecretStr(TOKENS[name]),), push_token=SecretStr(PUSH[name]))
        for name in ("north", "south")))


@pytest.fixture
def tenants(sqlite_url: str) -> Iterator[Tenants]:
    from worker.db import session_factory

    sessions = session_factory(sqlite_url)
    deliveries: dict[str, list[str]] = {}
    for account, keys in KEYS.items():
        with sessions.begin() as db:
            for key in keys:
                add_session(db, key, account=account, status="IDLE")
        for key in keys:
            complete(sessions, [WEBHOOK], key=key)
        with sessions() as db:
            deliveries[account] = list(db.scalars(select(Delivery.id)))
    deliveries["south"] = [d for d in deliveries["south"] if d not in deliveries["north"]]
    polls: list[tuple[list[int], str]] = []
    app = create_app(settings=make_settings(sqlite_url, api_tokens=GLOBAL),
                     sessions=sessions, accounts=two_accounts(),
                     enqueue_poll=lambda ids, token: polls.append((ids, token)))
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield Tenants(client, sessions, deliveries, polls)


def other(account: str) -> str:
    return "south" if account == "north" else "north"


def snapshot(sessions: sessionmaker[Session], account: str) -> list[tuple[object, ...]]:
    """Everything that a request could change of one account's rows."""
    with sessions() as db:
        rows = db.execute(
            select(TrackedSession.session_key, TrackedSession.tracking,
                   TrackedSession.user_metadata, Delivery.id, Delivery.state,
                   Delivery.failures, Delivery.next_attempt_at)
            .join(Event, Event.session_id == TrackedSession.id)
            .join(Delivery, Delivery.event_id == Event.id)
            .where(TrackedSession.account == account).order_by(Delivery.id)).all()
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("account", ["north", "south"])
def test_another_accounts_session_is_an_unknown_key(tenants: Tenants, account: str) -> None:
    client, token = tenants.client, auth(TOKENS[account])
    own, foreign = KEYS[account][0], KEYS[other(account)][0]
    assert client.get(f"/sessions/{own}", headers=token).json()["account"] == account
    for method in ("GET", "DELETE"):
        theirs = client.request(method, f"/sessions/{foreign}", headers=token)
        nobodys = client.request(method, "/sessions/NOBODY-1", headers=token)
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.text == nobodys.text.replace("NOBODY-1", foreign)
    listed = client.get("/sessions", headers=token).json()["sessions"]
    assert [row["session_key"] for row in listed] == KEYS[account]
    assert client.get(f"/sessions?account={other(account)}",
                      headers=token).json()["sessions"] == []
    delivered = client.get("/deliveries", headers=token).json()["deliveries"]
    assert {row["id"] for row in delivered} == set(tenants.deliveries[account])
    foreign_delivery = tenants.deliveries[other(account)][0]
    before = snapshot(tenants.sessions, other(account))
    replayed = client.post(f"/deliveries/{foreign_delivery}/replay", headers=token)
    missing = client.post("/deliveries/msg_0123456789abcdef0123456789abcdef/replay",
                          headers=token)
    assert replayed.status_code == missing.status_code == 404
    assert replayed.text == missing.text.replace("msg_0123456789abcdef0123456789abcdef",
                                                 foreign_delivery)
    assert snapshot(tenants.sessions, other(account)) == before  # neither untracked nor replayed
    # Its own delivery replays.
    assert client.post(f"/deliveries/{tenants.deliveries[account][0]}/replay",
                       headers=token).json()["replayed"] == 1


def test_tracking_under_an_account_the_token_does_not_own_is_refused(
        tenants: Tenants) -> None:
    client, token = tenants.client, auth(TOKENS["north"])
    refused = client.post("/sessions", headers=token,
                          json={"session_key": "NEW-1", "account": "south"})
    unknown = client.post("/sessions", headers=token,
                          json={"session_key": "NEW-1", "account": "west"})
    assert refused.status_code == unknown.status_code == 422
    # Worded as for an account that does not exist, naming the token's own account only.
    assert refused.text == unknown.text.replace("west", "south")
    assert "accounts are north\"" in refused.text
    assert client.post("/sessions", headers=token,
                       json={"session_key": "NEW-1"}).json()["added"] == 1  # its own
    assert client.get("/sessions/NEW-1", headers=token).json()["account"] == "north"
    conflict = client.post("/sessions", headers=auth(GLOBAL),
                           json={"session_key": "NEW-1", "account": "south"})
    assert conflict.status_code == 409
    which = client.post("/sessions", headers=auth(GLOBAL), json={"sessions": [
        {"session_key": "NEW-2", "account": "north"}, {"session_key": "NEW-3"}]})
    assert which.status_code == 422  # which account?
    assert which.json()["detail"][0]["loc"] == ["body", "sessions", 1, "account"]
    assert client.get("/metrics", headers=token).status_code == 403
    assert client.get("/metrics", headers=auth(GLOBAL)).status_code == 200


def test_a_global_token_sees_every_account(tenants: Tenants) -> None:
    with tenants.sessions.begin() as db:  # of an account since taken out of the settings
        add_session(db, "WEST-1", account="west")
    rows = tenants.client.get("/sessions", headers=auth(GLOBAL)).json()["sessions"]
    assert {row["account"] for row in rows} == {"north", "south", "west"}
    assert {row["dealer_name"] for row in rows} == {"North Motors", "South Motors", None}
    assert tenants.client.get("/sessions/WEST-1", headers=auth(GLOBAL)).status_code == 200
    assert tenants.client.get("/sessions/WEST-1",
                              headers=auth(TOKENS["north"])).status_code == 404
    south = tenants.client.get("/sessions?account=south", headers=auth(GLOBAL)).json()
    assert [row["session_key"] for row in south["sessions"]] == KEYS["south"]


def test_pushes_are_per_account(tenants: Tenants) -> None:
    client = tenants.client
    body = {"event": "SESSION:STATUS_CHANGE", "session_key": "NORTH-2"}
    with tenants.sessions.begin() as db:  # NORTH-2 was completed: track one still active
        add_session(db, "NORTH-3", account="north")
        add_session(db, "SOUTH-3", account="south")
    assert client.post("/pave/callbacks/north", headers=auth(PUSH["south"]),
                       json=body).status_code == 401
    assert client.post("/pave/callbacks/west", headers=auth(PUSH["north"]),
                       json=body).status_code == 401
    assert client.post("/pave/callbacks", headers=auth(PUSH["north"]),
                       json=body).status_code == 401  # no default account here
    # South's token on south's endpoint cannot poll north's session.
    crossed = client.post("/pave/callbacks/south", headers=auth(PUSH["south"]),
                          json={**body, "session_key": "NORTH-3"})
    assert crossed.json()["outcome"] == "not_tracked" and tenants.polls == []
    own = client.post("/pave/callbacks/north", headers=auth(PUSH["north"]),
                      json={**body, "session_key": "NORTH-3"})
    assert own.json()["outcome"] == "polling" and len(tenants.polls) == 1


ENDPOINTS = st.sampled_from([
    ("GET", "/sessions"), ("GET", "/sessions?account={account}"),
    ("GET", "/sessions?tracking=done"), ("GET", "/sessions?status=COMPLETE&limit=1"),
    ("GET", "/sessions/{key}"), ("DELETE", "/sessions/{key}"),
    ("GET", "/deliveries"), ("GET", "/deliveries?state=delivered&offset=1"),
    ("POST", "/deliveries/{delivery}/replay"), ("POST", "/sessions"),
    ("GET", "/metrics"), ("GET", "/openapi.json"),
])


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(endpoint=ENDPOINTS, asker=st.sampled_from(["north", "south"]),
       target=st.sampled_from(["north", "south"]), index=st.integers(0, 1),
       body_account=st.sampled_from([None, "north", "south", "west"]))
def test_no_answer_to_one_account_carries_the_others_data(
        tenants: Tenants, endpoint: tuple[str, str], asker: str, target: str, index: int,
        body_account: str | None) -> None:
    method, path = endpoint
    foreign = other(asker)
    path = path.format(account=target, key=KEYS[target][index],
                       delivery=tenants.deliveries[target][index])
    body = None
    if method == "POST" and path == "/sessions":
        body = {"session_key": KEYS[target][index],
                **({"account": body_account} if body_account else {})}
    before = snapshot(tenants.sessions, foreign)
    answer = tenants.client.request(method, path, headers=auth(TOKENS[asker]), json=body)
    assert answer.status_code < 500
    text = answer.text
    leaked = [*KEYS[foreign], *tenants.deliveries[foreign], f"{foreign.title()} Motors"]
    if target == foreign:
        # Its key or delivery id may come back in the 404's own words, as an unknown one's
        # would: nothing else of the other account.
        named = KEYS[target][index] if "{key}" in endpoint[1] or body else \
            tenants.deliveries[target][index]
        text = text.replace(named, "")
    assert not [item for item in leaked if re.search(re.escape(item), text)], (path, text)
    assert snapshot(tenants.sessions, foreign) == before  # and it changed nothing of theirs

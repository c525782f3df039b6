"""The HTTP API over a real server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import make_settings
from tests.test_outbox import WEBHOOK, complete
from worker.api.app import create_app
from worker.models import Tracking
from worker.pave.simulator import serving

TOKEN = "api-token-0123456789"
PUSH_TOKEN = "push-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Api:
    client: httpx.Client
    sessions: sessionmaker[Session]
    polls: list[tuple[list[int], str]] = field(default_factory=list)


@pytest.fixture
def api(database_url: str, sessions: sessionmaker[Session]) -> Iterator[Api]:
    polls: list[tuple[list[int], str]] = []
    settings = make_settings(database_url, api_tokens=f"{TOKEN},other-token-0123456789",
                             pave_push_token=PUSH_TOKEN)
    app = create_app(settings=settings, sessions=sessions,
                     enqueue_poll=lambda ids, token: polls.append((ids, token)))
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield Api(client, sessions, polls)


def test_bearer_tokens(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/sessions").status_code == 401
    assert api.client.get("/sessions", headers={"Authorization": "Bearer nope"}).status_code \
        == 401
    assert api.client.get("/sessions", headers={"Authorization": TOKEN}).status_code == 401
    other = {"Authorization": "Bearer other-token-0123456789"}
    assert api.client.get("/sessions", headers=other).status_code == 200
    assert api.client.get("/metrics", headers=AUTH).status_code == 200
    assert api.client.get("/metrics").status_code == 401


def test_track_list_show_untrack(api: Api) -> None:
    one = api.client.post("/sessions", headers=AUTH,
                          json={"session_key": "ABC-1", "metadata": {"email": "a@b.co"}})
    assert one.status_code == 200 and one.json()["added"] == 1
    batch = api.client.post("/sessions", headers=AUTH, json={"sessions": [
        {"session_key": "ABC-1"}, {"session_key": "ABC-2"}, {"session_key": "ABC-3"}]})
    assert batch.json() == {"added": 2, "restarted": 0, "updated": 0, "unchanged": 1}

    page = api.client.get("/sessions", headers=AUTH, params={"limit": 2}).json()
    assert [s["session_key"] for s in page["sessions"]] == ["ABC-1", "ABC-2"]
    assert page["next_offset"] == 2
    rest = api.client.get("/sessions", headers=AUTH, params={"limit": 2, "offset": 2}).json()
    assert [s["session_key"] for s in rest["sessions"]] == ["ABC-3"]
    assert rest["next_offset"] is None

    shown = api.client.get("/sessions/ABC-1", headers=AUTH).json()
    assert shown["metadata"] == {"email": "a@b.co"} and shown["tracking"] == "active"
    assert shown["history"] == [] and shown["deliveries"] == []

    gone = api.client.delete("/sessions/ABC-2", headers=AUTH)
    assert gone.json() == {"session_key": "ABC-2", "stopped": True}
    stopped = api.client.get("/sessions", headers=AUTH, params={"tracking": "stopped"}).json()
    assert [s["session_key"] for s in stopped["sessions"]] == ["ABC-2"]


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("post", "/sessions", {"session_key": "bad key"}, 422),
        ("post", "/sessions", {"session_key": "AB"}, 422),
        ("post", "/sessions", {"session_key": "ABC-1", "extra": 1}, 422),
        ("post", "/sessions", {"session_key": "ABC-1", "metadata": {"a": 1}}, 422),
        ("post", "/sessions", {"sessions": []}, 422),
        ("post", "/sessions", {"sessions": [{"session_key": f"K-{n:04d}"}
                                            for n in range(1001)]}, 422),
        ("post", "/sessions", [1, 2, 3], 422),
        ("post", "/sessions", "not json at all", 422),
        ("get", "/sessions?tracking=sleeping", None, 422),
        ("get", "/sessions?limit=0", None, 422),
        ("get", "/sessions?offset=-1", None, 422),
        ("get", "/sessions/bad%20key", None, 422),
        ("get", "/sessions/NOPE-1", None, 404),
        ("delete", "/sessions/NOPE-1", None, 404),
        ("get", "/deliveries?state=lost", None, 422),
        ("post", "/deliveries/12/replay", None, 422),
        ("post", "/deliveries/msg_00000000000000000000000000000000/replay", None, 404),
    ],
)
def test_bad_requests_get_a_4xx_that_says_why(api: Api, method: str, path: str,
                                              body: object, status: int) -> None:
    kwargs: dict[str, object] = {"headers": AUTH}
    if isinstance(body, str):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    response = api.client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_oversized_bodies_are_refused(api: Api) -> None:
    response = api.client.post("/sessions", headers=AUTH,
                               content=b'{"session_key": "' + b"A" * 1_100_000 + b'"}')
    assert response.status_code == 413
    assert "bytes" in response.json()["detail"]


def test_deliveries_and_replay(api: Api) -> None:
    complete(api.sessions, [WEBHOOK])
    listed = api.client.get("/deliveries", headers=AUTH).json()
    (delivery,) = listed["deliveries"]
    assert delivery["session_key"] == "ABC-1" and delivery["state"] == "pending"
    replayed = api.client.post(f"/deliveries/{delivery['id']}/replay", headers=AUTH)
    assert replayed.json() == {"id": delivery["id"], "replayed": 1}
    shown = api.client.get("/sessions/ABC-1", headers=AUTH).json()
    assert [d["id"] for d in shown["deliveries"]] == [delivery["id"]]


def push(api: Api, key: str, token: str = PUSH_TOKEN) -> httpx.Response:
    return api.client.post("/pave/callbacks", headers={"Authorization": f"Bearer {token}"},
                           json={"event": "SESSION:STATUS_CHANGE", "session_key": key,
                                 "status": "COMPLETE"})


def test_pave_push_starts_a_poll_and_records_nothing(api: Api) -> None:
    api.client.post("/sessions", headers=AUTH, json={"session_key": "ABC-1"})
    assert push(api, "ABC-1", token="wrong").status_code == 401
    assert push(api, "ABC-1", token=TOKEN).status_code == 401  # API tokens are not push tokens
    first = push(api, "ABC-1")
    assert first.json() == {"session_key": "ABC-1", "outcome": "polling"}
    assert len(api.polls) == 1 and len(api.polls[0][0]) == 1
    assert push(api, "ABC-1").json()["outcome"] == "in_flight"  # one poll at a time
    assert len(api.polls) == 1
    shown = api.client.get("/sessions/ABC-1", headers=AUTH).json()
    assert shown["status"] is None and shown["history"] == []  # the body is not truth
    assert push(api, "NOPE-1").json()["outcome"] == "not_tracked"
    bad = api.client.post("/pave/callbacks", headers={"Authorization": f"Bearer {PUSH_TOKEN}"},
                          json={"event": "SESSION:COMPLETE", "session_key": "../etc"})
    assert bad.status_code == 422


def test_push_for_a_finished_session_does_nothing(api: Api) -> None:
    complete(api.sessions, [])
    assert push(api, "ABC-1").json()["outcome"] == "finished"
    assert api.polls == []


def test_push_autotrack(database_url: str, sessions: sessionmaker[Session]) -> None:
    polls: list[tuple[list[int], str]] = []
    settings = make_settings(database_url, api_tokens=TOKEN, pave_push_token=PUSH_TOKEN,
                             push_autotrack=True)
    app = create_app(settings=settings, sessions=sessions,
                     enqueue_poll=lambda ids, token: polls.append((ids, token)))
    with serving(app) as url, httpx.Client(base_url=url) as client:
        response = client.post("/pave/callbacks",
                               headers={"Authorization": f"Bearer {PUSH_TOKEN}"},
                               json={"event": "SESSION:STATUS_CHANGE", "session_key": "NEW-1"})
        assert response.json()["outcome"] == "polling" and len(polls) == 1
        shown = client.get("/sessions/NEW-1", headers=AUTH).json()
    assert shown["tracking"] == Tracking.ACTIVE.value
    assert shown["metadata"] == {"source": "pave-push"}
    assert json.loads(json.dumps(shown))["history"] == []


def test_a_push_without_the_token_is_refused_before_its_body_is_read(api: Api) -> None:
    wrong = api.client.post("/pave/callbacks", headers={"Authorization": f"Bearer {TOKEN}"},
                            json={"event": "SESSION:COMPLETE", "session_key": "../etc"})
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == "Bearer"

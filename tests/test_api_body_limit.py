"""The request-body limit over a real server on loopback: a body over MAX_BODY_BYTES is
answered 413, whether it says its length up front or comes chunked with no length at all,
and the app stops reading it at the limit. Then BodyLimit alone, around small ASGI apps
that meet the limit in each way an app can: one response start, always."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.conftest import make_settings
from tests.test_api import AUTH, PUSH_TOKEN, TOKEN
from worker.api.app import MAX_BODY_BYTES, create_app
from worker.api.body_limit import BodyLimit, _BodyTooLarge
from worker.db import session_factory
from worker.pave.simulator import serving

JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
TOO_LARGE = {"detail": f"request body over {MAX_BODY_BYTES} bytes"}
CHUNK = 64 * 1024


def padded_json(prefix: bytes, size: int) -> bytes:
    """A JSON object of exactly `size` bytes: `prefix` (an unclosed object), blanks, `}`."""
    return prefix + b" " * (size - len(prefix) - 1) + b"}"


@dataclass
class Chunked:
    """A body sent in CHUNK pieces, which makes httpx send it chunked, with no
    Content-Length; `sent` counts the bytes handed to httpx so far."""

    body: bytes
    sent: int = 0

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), CHUNK):
            piece = self.body[start:start + CHUNK]
            self.sent += len(piece)
            yield piece


class CountingBodyBytes:
    """Wraps an ASGI app and counts the request-body bytes it took from the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.read = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counting_receive, send)


@pytest.fixture
def app(sqlite_url: str) -> CountingBodyBytes:
    settings = make_settings(sqlite_url, api_tokens=TOKEN, pave_push_token=PUSH_TOKEN)
    return CountingBodyBytes(create_app(settings=settings,
                                        sessions=session_factory(sqlite_url),
                                        enqueue_poll=lambda ids, token: None))


@pytest.fixture
def client(app: CountingBodyBytes) -> Iterator[httpx.Client]:
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_a_chunked_body_over_the_limit_is_refused_and_not_acted_on(
        client: httpx.Client) -> None:
    body = Chunked(padded_json(b'{"session_key": "ABC-1"', 2_000_000))
    response = client.post("/sessions", headers=JSON_AUTH, content=body)
    assert response.status_code == 413, response.text
    assert response.json() == TOO_LARGE
    assert client.get("/sessions/ABC-1", headers=AUTH).status_code == 404


@pytest.mark.parametrize("size, status", [(MAX_BODY_BYTES - 100, 200),
                                          (MAX_BODY_BYTES, 200),
                                          (MAX_BODY_BYTES + 1, 413)])
def test_the_limit_is_on_the_bytes_not_the_framing(client: httpx.Client, size: int,
                                                   status: int) -> None:
    body = padded_json(b'{"session_key": "ABC-1"', size)
    chunked = client.post("/sessions", headers=JSON_AUTH, content=Chunked(body))
    with_length = client.post("/sessions", headers=JSON_AUTH, content=body)
    assert (chunked.status_code, with_length.status_code) == (status, status), chunked.text
    if status == 413:
        assert chunked.json() == with_length.json() == TOO_LARGE
    else:
        assert chunked.json()["added"] + with_length.json()["added"] == 1


def test_a_large_content_length_is_refused_before_the_body_is_read(
        client: httpx.Client, app: CountingBodyBytes) -> None:
    response = client.post("/sessions", headers=JSON_AUTH, content=b"x" * 5_000_000)
    assert response.status_code == 413 and response.json() == TOO_LARGE
    assert app.read == 0


def test_a_chunked_flood_is_read_only_up_to_the_limit(client: httpx.Client,
                                                      app: CountingBodyBytes) -> None:
    """The server keeps taking what the client sends and drops what the app leaves
    unread, so the client always gets to send it all: what shows that the body was not
    read is the count of bytes the app itself took from the server."""
    body = Chunked(padded_json(b'{"event": "SESSION:COMPLETE", "session_key": "ABC-1"',
                               8_000_000))
    response = client.post("/pave/callbacks", content=body,
                           headers={"Authorization": f"Bearer {PUSH_TOKEN}",
                                    "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json() == TOO_LARGE
    assert MAX_BODY_BYTES < app.read < 2 * MAX_BODY_BYTES < body.sent
    assert client.get("/healthz").json() == {"status": "ok"}  # and the server still answers


@pytest.mark.parametrize("path, token", [("/sessions", None), ("/sessions", PUSH_TOKEN),
                                         ("/pave/callbacks", None), ("/pave/callbacks", TOKEN),
                                         ("/deliveries/0123456789abcdef/replay", None)])
@pytest.mark.parametrize("body", [b"not json at all", b'{"session_key": "ABC-1"}'],
                         ids=["garbage", "json"])
def test_a_request_without_its_token_is_refused_before_its_body_is_read(
        client: httpx.Client, app: CountingBodyBytes, path: str, token: str | None,
        body: bytes) -> None:
    """401, whatever the body: a body parsed before the token is checked answers 422,
    which tells a stranger the route exists and costs the server the parse."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    chunked = Chunked(body * (4_000_000 // len(body)))
    for content in (body, chunked):
        response = client.post(path, headers=headers, content=content)
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert app.read == 0


async def reads_the_body(receive: Receive) -> None:
    while (await receive()).get("more_body"):
        pass


async def answer(send: Send, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"from the app"})


async def lets_the_error_out(scope: Scope, receive: Receive, send: Send) -> None:
    await reads_the_body(receive)
    await answer(send, 200)


async def answers_what_it_could_not_read(scope: Scope, receive: Receive, send: Send) -> None:
    try:
        await reads_the_body(receive)
    except Exception:  # as FastAPI does: any error while reading becomes its own 400
        await answer(send, 400)
        return
    await answer(send, 200)


async def answers_before_reading(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await reads_the_body(receive)
    await send({"type": "http.response.body", "body": b"too late to refuse"})


def call(app: ASGIApp, pieces: list[bytes], sent: list[Message],
         headers: tuple[tuple[bytes, bytes], ...] = ()) -> int:
    """`app` under a 10-byte BodyLimit, given a body in `pieces`; what it sends the
    server goes into `sent`. Returns how many pieces were left unread."""
    incoming: list[Message] = [{"type": "http.request", "body": piece,
                                "more_body": n < len(pieces) - 1}
                               for n, piece in enumerate(pieces)]

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": list(headers)}
    asyncio.run(BodyLimit(app, max_bytes=10)(scope, receive, send))
    return len(incoming)


def statuses(sent: list[Message]) -> list[int]:
    return [m["status"] for m in sent if m["type"] == "http.response.start"]


@pytest.mark.parametrize("app", [lets_the_error_out, answers_what_it_could_not_read])
def test_an_app_that_has_not_answered_yet_is_answered_413_once(app: ASGIApp) -> None:
    sent: list[Message] = []
    assert call(app, [b"12345", b"67890", b"1", b"never read"], sent) == 1
    assert statuses(sent) == [413]
    assert b"from the app" not in b"".join(m.get("body", b"") for m in sent)


@pytest.mark.parametrize("app", [lets_the_error_out, answers_what_it_could_not_read])
def test_a_body_at_the_limit_reaches_the_app(app: ASGIApp) -> None:
    sent: list[Message] = []
    call(app, [b"12345", b"67890"], sent)
    assert statuses(sent) == [200]


@pytest.mark.parametrize("length", [b"11", b"1e3", b"-1"])
def test_a_content_length_over_the_limit_or_unreadable_is_refused_unread(
        length: bytes) -> None:
    sent: list[Message] = []
    assert call(lets_the_error_out, [b"1234567890", b"1"], sent,
                headers=((b"content-length", length),)) == 2
    assert statuses(sent) == [413]


def test_an_app_that_already_answered_gets_the_error_not_a_second_start() -> None:
    sent: list[Message] = []
    with pytest.raises(_BodyTooLarge):
        call(answers_before_reading, [b"12345678901"], sent)
    assert statuses(sent) == [200]

"""The PAVE client: unit cases on httpx.MockTransport, then the real simulator on loopback."""

import asyncio
import datetime as dt
import functools
import gzip
import json
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.backoff import parse_retry_after
from worker.errors import (
    PaveAuthError,
    PaveBadPayload,
    PaveNotFound,
    PaveRateLimited,
    PaveServerError,
    PaveTransportError,
)
from worker.pave.auth import PaveCredentials
from worker.pave.client import MAX_BODY_BYTES, PaveClient
from worker.pave.payload import SessionSnapshot
from worker.pave.simulator import Simulator, scaled, serving

CREDENTIALS = PaveCredentials(api_key="sim-api-key", username="sim-user",
                              api_secret="sim-api-secret")
NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)


def get(handler: Callable[[httpx.Request], httpx.Response], key: str = "ABC-1",
        **kwargs: object) -> SessionSnapshot:
    async def call() -> SessionSnapshot:
        async with PaveClient(base_url="https://pave.test/v1", credentials=CREDENTIALS,
                              transport=httpx.MockTransport(handler), **kwargs) as client:
            return await client.get_session(key)
    return asyncio.run(call())


def test_sends_the_three_headers_to_the_session_url() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"session_key": "ABC-1", "status": "IDLE"})

    snapshot = get(handler, clock=lambda: NOW)
    assert snapshot.status == "IDLE"
    request = seen[0]
    assert str(request.url) == "https://pave.test/v1/sessions/ABC-1"
    assert request.headers["API-Key"] == "sim-api-key"
    assert request.headers["API-Timestamp"] == "2026-11-29T12:00:00Z"
    assert request.headers["API-Token"] == CREDENTIALS.headers(NOW)["API-Token"]


@pytest.mark.parametrize(
    "response, error",
    [
        (httpx.Response(404, json={"message": "Session ABC-1 cannot be found."}), PaveNotFound),
        (httpx.Response(401, json={"message": "Unauthenticated."}), PaveAuthError),
        (httpx.Response(403, text="Forbidden"), PaveAuthError),
        (httpx.Response(429, text="slow down"), PaveRateLimited),
        (httpx.Response(500, text="boom"), PaveServerError),
        (httpx.Response(502, html="<html>Bad Gateway</html>"), PaveServerError),
        (httpx.Response(302, headers={"Location": "https://elsewhere"}), PaveServerError),
        (httpx.Response(200, html="<html>maintenance</html>"), PaveBadPayload),
        (httpx.Response(200, text='{"session_key": "ABC-1", "sta'), PaveBadPayload),
        (httpx.Response(200, json={"session_key": "OTHER", "status": "IDLE"}), PaveBadPayload),
    ],
)
def test_each_answer_maps_to_its_error(response: httpx.Response, error: type) -> None:
    with pytest.raises(error) as caught:
        get(lambda request: response)
    assert caught.value.describe().startswith(error.kind)


def test_rate_limit_carries_retry_after() -> None:
    with pytest.raises(PaveRateLimited) as caught:
        get(lambda request: httpx.Response(429, headers={"Retry-After": "17"}))
    assert caught.value.retry_after == 17


@pytest.mark.parametrize(
    "exception",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"),
     httpx.RemoteProtocolError("reset")],
)
def test_transport_failures(exception: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exception

    with pytest.raises(PaveTransportError):
        get(handler)


def test_oversized_answer_is_refused() -> None:
    body = json.dumps({"session_key": "ABC-1", "status": "IDLE", "pad": "x" * 2_100_000})
    with pytest.raises(PaveBadPayload, match="larger"):
        get(lambda request: httpx.Response(200, text=body))


def test_retry_after_forms() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0
    assert parse_retry_after("Sun, 29 Nov 2026 12:00:30 GMT", now=NOW) == 30
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("inf") is None
    # A day at most: a broken header must not pause anything until the date it names.
    assert parse_retry_after("1e12") == 86_400
    assert parse_retry_after("Fri, 31 Dec 2100 00:00:00 GMT", now=NOW) == 86_400


# -- against the simulator on loopback ------------------------------------------------

def fetch(url: str, key: str, credentials: PaveCredentials = CREDENTIALS,
          clock: Callable[[], dt.datetime] | None = None) -> SessionSnapshot:
    async def call() -> SessionSnapshot:
        kwargs = {"clock": clock} if clock else {}
        async with PaveClient(base_url=url, credentials=credentials, timeout=5,
                              **kwargs) as client:  # type: ignore[arg-type]
            return await client.get_session(key)
    return asyncio.run(call())


def test_simulator_serves_a_session(simulator: Simulator, simulator_url: str) -> None:
    simulator.add_session("ABC-1", scaled("complete", 0), trailing_comma=True)
    snapshot = fetch(simulator_url, "ABC-1")
    assert snapshot.status == "COMPLETE"
    assert snapshot.vehicle and snapshot.vehicle["odom_reading"] == 100945


def test_simulator_404s_unknown_keys(simulator_url: str) -> None:
    with pytest.raises(PaveNotFound):
        fetch(simulator_url, "NOPE-1")


def test_simulator_refuses_a_wrong_secret(simulator: Simulator, simulator_url: str) -> None:
    simulator.add_session("ABC-1", [("IDLE", None)])
    wrong = PaveCredentials(api_key="sim-api-key", username="sim-user", api_secret="nope")
    with pytest.raises(PaveAuthError):
        fetch(simulator_url, "ABC-1", wrong)


def test_simulator_refuses_a_stale_timestamp(simulator: Simulator, simulator_url: str) -> None:
    simulator.add_session("ABC-1", [("IDLE", None)])
    six_minutes_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
    with pytest.raises(PaveAuthError):
        fetch(simulator_url, "ABC-1", clock=lambda: six_minutes_ago)
    four_minutes_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)
    assert fetch(simulator_url, "ABC-1", clock=lambda: four_minutes_ago).status == "IDLE"


def test_simulator_accepts_a_static_token() -> None:
    from worker.pave.simulator import running_simulator

    simulator = Simulator(api_key="k", api_secret=None, api_token="static-1")
    simulator.add_session("ABC-1", [("IDLE", None)])
    with running_simulator(simulator) as url:
        assert fetch(url, "ABC-1", PaveCredentials(api_key="k", api_token="static-1")).status
        with pytest.raises(PaveAuthError):
            fetch(url, "ABC-1", PaveCredentials(api_key="k", api_token="static-2"))


def test_refused_connection_is_a_transport_error() -> None:
    with pytest.raises(PaveTransportError):
        fetch("http://127.0.0.1:9/v1", "ABC-1")


def test_results_only_once_complete(simulator: Simulator, simulator_url: str) -> None:
    from worker.pave.fetching import fetch_sessions

    simulator.add_session("ABC-1", [("IDLE", None)])
    simulator.add_session("ABC-2", [("COMPLETE", None)])

    async def call() -> dict[str, object]:
        async with PaveClient(base_url=simulator_url, credentials=CREDENTIALS) as client:
            with pytest.raises(PaveServerError, match="HTTP 400"):
                await client.get_results("ABC-1")
            outcomes = await fetch_sessions(client, ["ABC-1", "ABC-2"], concurrency=2,
                                            with_results=True)
            return dict(outcomes)

    outcomes = asyncio.run(call())
    idle, complete = outcomes["ABC-1"], outcomes["ABC-2"]
    assert isinstance(idle, SessionSnapshot) and idle.results is None
    assert isinstance(complete, SessionSnapshot) and complete.results is not None
    assert complete.results["inspection"]["worst_grade"] == 3


def test_results_that_are_not_an_object_are_a_bad_payload() -> None:
    async def call() -> object:
        async with PaveClient(base_url="https://pave.test/v1", credentials=CREDENTIALS,
                              transport=httpx.MockTransport(
                                  lambda request: httpx.Response(200, json=[1, 2]))) as client:
            return await client.get_results("ABC-1")

    with pytest.raises(PaveBadPayload, match="results"):
        asyncio.run(call())


def test_a_batch_never_outlasts_its_budget() -> None:
    """However slow PAVE is, the batch is back in time to be recorded under its lease."""
    from worker.pave.fetching import TOO_LATE, fetch_sessions

    async def answer(request: httpx.Request) -> httpx.Response:
        key = request.url.path.rsplit("/", 1)[1]
        if key.startswith("SLOW"):
            await asyncio.sleep(30)
        return httpx.Response(200, json={"session_key": key, "status": "IDLE"})

    async def call() -> dict[str, object]:
        async with PaveClient(base_url="https://pave.test/v1", credentials=CREDENTIALS,
                              timeout=20, transport=httpx.MockTransport(answer)) as client:
            return dict(await fetch_sessions(
                client, ["FAST-1", "SLOW-1", "FAST-2", "SLOW-2", "FAST-3"], concurrency=2,
                budget=0.5))

    started = time.monotonic()
    outcomes = asyncio.run(call())
    assert time.monotonic() - started < 2
    assert all(isinstance(outcomes[f"FAST-{n}"], SessionSnapshot) for n in (1, 2))
    slow = outcomes["SLOW-1"]
    assert isinstance(slow, PaveTransportError) and "within the batch's 0.5 s" in str(slow)
    # The ones still waiting for a slot when time ran out were not asked at all: not
    # PAVE's failure, so not an error either.
    assert outcomes["FAST-3"] == TOO_LATE


# -- a server that does not speak HTTP properly ----------------------------------------

@contextmanager
def raw_server(answer: Callable[[socket.socket], None],
               requests: list[bytes] | None = None) -> Iterator[str]:
    """A loopback TCP server that answers every connection with `answer` (and keeps
    what each one sent in `requests`)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                received = connection.recv(65536)
                if requests is not None:
                    requests.append(received)
                answer(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join()
        listener.close()


def fetch_with_timeout(url: str, timeout: float) -> SessionSnapshot:
    async def call() -> SessionSnapshot:
        async with PaveClient(base_url=url, credentials=CREDENTIALS, timeout=timeout) as client:
            return await client.get_session("ABC-1")
    return asyncio.run(call())


@pytest.mark.parametrize("garbage", [b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n",
                                     b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{",
                                     b"\x00\xff" * 100])
def test_garbage_on_the_wire_is_a_transport_error(garbage: bytes) -> None:
    with raw_server(lambda connection: connection.sendall(garbage)) as url, \
            pytest.raises(PaveTransportError):
        fetch_with_timeout(url, 2)


def test_a_hang_up_is_a_transport_error() -> None:
    with raw_server(lambda connection: None) as url, pytest.raises(PaveTransportError):
        fetch_with_timeout(url, 2)


def test_an_answer_that_trickles_in_times_out_as_a_whole() -> None:
    """Each byte comes well within the read timeout; the whole answer does not."""
    def trickle(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        try:
            for _ in range(40):
                connection.sendall(b" ")
                time.sleep(0.1)
        except OSError:
            pass  # the client gave up, as it should

    started = time.monotonic()
    with raw_server(trickle) as url, pytest.raises(PaveTransportError, match="timed out"):
        fetch_with_timeout(url, 1)
    assert time.monotonic() - started < 4


def test_pave_is_reached_through_the_environments_proxy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY is honoured as an httpx client would: the request goes to the proxy in
    absolute form, for a host only the proxy can reach."""
    seen: list[bytes] = []
    body = json.dumps({"session_key": "ABC-1", "status": "IDLE"}).encode()

    def proxy(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    with raw_server(proxy, requests=seen) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url.removesuffix("/v1"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert fetch_with_timeout("http://pave.invalid/v1", 5).status == "IDLE"
    assert seen and seen[0].startswith(b"GET http://pave.invalid/v1/sessions/ABC-1 ")


def test_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.pave.client import proxy_from_environment

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "api.paveapi.com")
    assert proxy_from_environment("https://api.paveapi.com/v1/") is None
    proxy = proxy_from_environment("https://openapi.paveapi.com/v1/")
    assert proxy is not None and str(proxy.url) == "http://proxy.internal:3128"


# -- answers too large to hold (issue #12) ---------------------------------------------

def gzipped(head: bytes, padding: int, tail: bytes) -> bytes:
    """`head`, `padding` spaces and `tail`, gzipped a megabyte at a time: a bomb of any
    size without holding it inflated here."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    parts = [compressor.compress(head)]
    for start in range(0, padding, 1_000_000):
        parts.append(compressor.compress(b" " * min(1_000_000, padding - start)))
    parts.append(compressor.compress(tail) + compressor.flush())
    return b"".join(parts)


@contextmanager
def answering(answer: Callable[[Request], Response]) -> Iterator[str]:
    """PAVE_API_URL of a real server on loopback whose every session answer is `answer`'s."""
    async def endpoint(request: Request) -> Response:
        return answer(request)

    with serving(Starlette(routes=[Route("/v1/sessions/{key:path}", endpoint)])) as url:
        yield f"{url}/v1"


def peak_traced_bytes(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


@functools.cache
def gzip_bomb() -> bytes:
    return gzipped(b'{"session_key": "ABC-1", "status": "IDLE", "pad": "', 50_000_000, b'"}')


@pytest.mark.parametrize("status, error", [(200, PaveBadPayload), (503, PaveServerError)])
def test_a_gzip_bomb_is_never_inflated_past_the_limit(status: int, error: type) -> None:
    """50 KB of gzip that inflate to 50 MB: refused (or its error status mapped) holding
    about the limit, not the 50 MB. tracemalloc sees every inflated byte, because the
    transport has aiohttp pass the body on compressed and Python's zlib inflates it
    into Python bytes; reading the whole answer first peaked at 100 MB here."""
    bomb = gzip_bomb()
    assert len(bomb) < 60_000
    with answering(lambda request: Response(bomb, status_code=status,
                                            headers={"Content-Encoding": "gzip"})) as url:
        def poll() -> None:
            with pytest.raises(error, match="larger" if status == 200 else "HTTP 503"):
                fetch(url, "ABC-1")

        peak = peak_traced_bytes(poll)
    assert peak < 4 * MAX_BODY_BYTES


def test_a_long_answer_is_not_read_past_the_limit() -> None:
    """100 MB with no Content-Length: the client hangs up soon after the limit, so the
    server gets only that and what the sockets buffer into the wire."""
    sent = 0
    piece = b" " * 1_000_000

    def endless(connection: socket.socket) -> None:
        nonlocal sent
        connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(100):
                connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            connection.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the client hung up, as it should

    with raw_server(endless) as url, pytest.raises(PaveBadPayload, match="larger"):
        fetch_with_timeout(url, 10)
    assert sent < 40_000_000


def test_a_content_length_over_the_limit_is_refused_before_the_body() -> None:
    """The body never comes: the header alone is enough to refuse, long before the
    answer's timeout."""
    def announce(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n{"
                           % (MAX_BODY_BYTES + 1))
        connection.settimeout(5)
        try:
            connection.recv(1)  # until the client hangs up
        except OSError:
            pass

    started = time.monotonic()
    with raw_server(announce) as url, pytest.raises(PaveBadPayload, match="larger"):
        fetch_with_timeout(url, 5)
    assert time.monotonic() - started < 3


def test_a_gzip_answer_under_the_limit_is_read() -> None:
    """Close to the limit once inflated, on the real transport; gzip is asked for."""
    seen: list[str | None] = []
    body = gzipped(b'{"session_key": "ABC-1", "status": "COMPLETE", "pad": "',
                   MAX_BODY_BYTES - 100, b'"}')

    def answer(request: Request) -> Response:
        seen.append(request.headers.get("Accept-Encoding"))
        return Response(body, headers={"Content-Encoding": "gzip",
                                       "Content-Type": "application/json"})

    with answering(answer) as url:
        assert fetch(url, "ABC-1").status == "COMPLETE"
    assert seen == ["gzip"]


@pytest.mark.parametrize(
    "body, encoding, reason",
    [(gzip.compress(b'{"session_key": "ABC-1", "status": "IDLE"}')[:-12] + b"garbage!" * 4,
      "gzip", "not valid gzip"),
     (b'{"session_key": "ABC-1", "status": "IDLE"}', "br", "encoding we did not ask for")],
    ids=["corrupt gzip", "brotli unasked"],
)
def test_an_answer_we_cannot_inflate_is_a_bad_payload(body: bytes, encoding: str,
                                                      reason: str) -> None:
    with answering(lambda request: Response(body, headers={"Content-Encoding": encoding})
                   ) as url, pytest.raises(PaveBadPayload, match=reason):
        fetch(url, "ABC-1")

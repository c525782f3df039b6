"""The PAVE API client: httpx requests on one pooled transport, typed errors, timeouts.

The transport is injectable: unit tests pass `httpx.MockTransport(handler)`, integration
tests point `base_url` at the simulator on loopback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from types import TracebackType
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from worker.backoff import parse_retry_after
from worker.errors import (
    PaveAuthError,
    PaveBadPayload,
    PaveError,
    PaveNotFound,
    PaveRateLimited,
    PaveServerError,
    PaveTransportError,
)
from worker.pave.auth import PaveCredentials
from worker.pave.payload import SessionSnapshot, parse_results, parse_session

MAX_BODY_BYTES = 2_000_000
USER_AGENT = "pave-tracker"
# Only what `read_body` can inflate under its limit: without this aiohttp would offer
# deflate (and br, once Brotli is installed) on our behalf.
ACCEPT_ENCODING = "gzip"
_GZIP_WBITS = zlib.MAX_WBITS | 16


class PaveClient:
    def __init__(
        self,
        *,
        base_url: str,
        credentials: PaveCredentials,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._credentials = credentials
        self._clock = clock
        self._timeout = timeout
        self._base_url = base_url.rstrip("/") + "/"
        # Connecting should be quick; PAVE gets the whole budget to answer.
        self._timeouts = httpx.Timeout(timeout, connect=min(timeout, 5.0)).as_dict()
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        # httpx's types and transport interface on aiohttp's connection pool, without
        # httpx's client layer: httpx's own pool (httpcore) capped a process at ~450
        # requests/s, and `AsyncClient` took ~15 % of a poll's CPU more than the
        # transport alone for nothing PAVE needs (cookies, redirects, URL merging).
        # Measured with scripts/benchmark.py; NOTES.md saw the same.
        self._transport = transport or AiohttpTransport(
            limits=limits, proxy=proxy_from_environment(self._base_url))

    @property
    def timeout(self) -> float:
        """Seconds one request gets to be answered in full (PAVE_TIMEOUT)."""
        return self._timeout

    async def __aenter__(self) -> PaveClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def get_session(self, session_key: str) -> SessionSnapshot:
        """`GET /sessions/{key}`; raises a `PaveError` subclass for anything but a session."""
        body = await self._get(f"sessions/{session_key}")
        return parse_session(body, expected_key=session_key)

    async def get_results(self, session_key: str) -> dict[str, Any]:
        """`GET /sessions/{key}/results`: PAVE's inspection results, once COMPLETE."""
        body = await self._get(f"sessions/{session_key}/results")
        return parse_results(body)

    async def _get(self, path: str) -> bytes:
        """The body of a 2xx answer to `GET path`, decoded; any other answer raises."""
        request = httpx.Request(
            "GET", self._base_url + path,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json",
                     "Accept-Encoding": ACCEPT_ENCODING,
                     **self._credentials.headers(self._clock())},
            extensions={"timeout": self._timeouts},
        )
        try:
            # The transport times each read; this bounds the whole answer, however slowly
            # it trickles in.
            async with asyncio.timeout(self._timeout):
                response = await self._transport.handle_async_request(request)
                try:
                    # An error's body is never read: its status and headers say it all.
                    # Closing it unread costs its connection only when the body had not
                    # arrived yet (aiohttp keeps a connection whose body is complete).
                    raise_for_pave_status(response)
                    return await read_body(response, limit=MAX_BODY_BYTES)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise PaveTransportError(f"timed out (no full answer in {self._timeout:g} s)"
                                     ) from None
        except httpx.TimeoutException as exc:
            raise PaveTransportError(f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise PaveTransportError(f"no answer ({type(exc).__name__}: {exc})") from None
        except aiohttp.ClientError as exc:  # what httpx-aiohttp does not translate
            raise PaveTransportError(f"bad answer ({type(exc).__name__}: {exc})") from None


async def read_body(response: httpx.Response, *, limit: int) -> bytes:
    """The body, gzip undone, refused with `PaveBadPayload` as soon as it passes `limit`.

    The count is of inflated bytes and zlib is told never to give more than fits, so a
    gzip bomb holds no more memory than a plain answer at the limit. httpx's own decoding
    (`aiter_bytes`) cannot promise that: it inflates each 16 KB chunk whole, up to ~16 MB.
    """
    too_large = f"answer larger than {limit} bytes"
    length = response.headers.get("Content-Length", "")
    if length.isdecimal() and int(length) > limit:
        raise PaveBadPayload(too_large)
    try:
        body = response.content  # an answer made in memory (MockTransport) is read already
    except httpx.ResponseNotRead:
        pass
    else:
        if len(body) > limit:
            raise PaveBadPayload(too_large)
        return body

    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise PaveBadPayload(f"answer in an encoding we did not ask for: {encoding[:40]}")
    inflater = zlib.decompressobj(_GZIP_WBITS) if encoding.endswith("gzip") else None
    received = bytearray()
    try:
        async for chunk in response.aiter_raw():
            if inflater is None:
                received += chunk
            else:
                pending = chunk
                while pending and len(received) <= limit:
                    received += inflater.decompress(pending, limit + 1 - len(received))
                    pending = inflater.unconsumed_tail
            if len(received) > limit:
                raise PaveBadPayload(too_large)
        if inflater is not None:
            received += inflater.flush()
    except zlib.error as exc:
        raise PaveBadPayload(f"answer is not valid gzip ({exc})") from None
    if len(received) > limit:
        raise PaveBadPayload(too_large)
    return bytes(received)


def proxy_from_environment(url: str) -> httpx.Proxy | None:
    """The proxy HTTP_PROXY/HTTPS_PROXY name for `url`, unless NO_PROXY excludes its host:
    what an httpx client would honour by itself."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    return httpx.Proxy(proxy) if proxy else None


def raise_for_pave_status(response: httpx.Response) -> None:
    code = response.status_code
    if 200 <= code < 300:
        return
    if code == 404:
        raise PaveNotFound("PAVE does not know this session", status_code=code)
    if code in (401, 403):
        raise PaveAuthError(f"PAVE refused the credentials (HTTP {code})", status_code=code)
    if code == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise PaveRateLimited("PAVE asked to slow down (HTTP 429)", retry_after=retry_after)
    raise PaveServerError(f"PAVE answered HTTP {code}", status_code=code)


__all__ = ["PaveClient", "PaveError", "raise_for_pave_status"]

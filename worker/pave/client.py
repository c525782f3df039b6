"""The PAVE API client: httpx requests on one pooled transport, typed errors, timeouts.

The transport is injectable: unit tests pass `httpx.MockTransport(handler)`, integration
tests point `base_url` at the simulator on loopback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.parse
import urllib.request
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
        response = await self._get(f"sessions/{session_key}")
        return parse_session(response.content, expected_key=session_key)

    async def get_results(self, session_key: str) -> dict[str, Any]:
        """`GET /sessions/{key}/results`: PAVE's inspection results, once COMPLETE."""
        response = await self._get(f"sessions/{session_key}/results")
        return parse_results(response.content)

    async def _get(self, path: str) -> httpx.Response:
        request = httpx.Request(
            "GET", self._base_url + path,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json",
                     **self._credentials.headers(self._clock())},
            extensions={"timeout": self._timeouts},
        )
        try:
            # The transport times each read; this bounds the whole answer, however slowly
            # it trickles in.
            async with asyncio.timeout(self._timeout):
                response = await self._transport.handle_async_request(request)
                try:
                    await response.aread()
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
        raise_for_pave_status(response)
        if len(response.content) > MAX_BODY_BYTES:
            raise PaveBadPayload(f"answer larger than {MAX_BODY_BYTES} bytes")
        return response


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

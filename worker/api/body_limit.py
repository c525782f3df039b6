"""A bound on request bodies, counted as the bytes arrive: chunked bodies carry no
Content-Length, so a header check alone lets them through at any size.

A pure ASGI middleware (https://www.starlette.io/middleware/#pure-asgi-middleware), so
it sees each piece of the body as the server hands it over and never holds the whole.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(Exception):
    """Raised from the app's `receive` to stop it reading; only BodyLimit catches it."""


class BodyLimit:
    """Answers 413 to a request whose body is over `max_bytes`: at once when its
    Content-Length says so, else as soon as the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _CountedExchange(scope, receive, send, max_bytes=self.max_bytes)
        if not exchange.declared_length_fits():
            await exchange.refuse()
            return
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except _BodyTooLarge:
            if exchange.app_started:
                raise
            await exchange.refuse()


class _CountedExchange:
    """One request's `receive` and `send`, counting body bytes against the limit."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, *, max_bytes: int) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.max_bytes = max_bytes
        self.received = 0
        self.over_limit = False
        self.app_started = False
        self.refused = False

    def declared_length_fits(self) -> bool:
        for name, value in self.scope["headers"]:
            if name == b"content-length":
                return bool(value.isdigit() and int(value) <= self.max_bytes)
        return True

    async def receive(self) -> Message:
        if self.over_limit:
            raise _BodyTooLarge
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.over_limit = self.received > self.max_bytes
            if self.over_limit:
                raise _BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.over_limit and not self.app_started:
            # The app is answering a body it could not finish reading (FastAPI turns any
            # error while reading into its own 400): the 413 goes out in its place.
            await self.refuse()
            return
        if message["type"] == "http.response.start":
            self.app_started = True
        await self._send(message)

    async def refuse(self) -> None:
        """Send the 413, once: ASGI allows one response start per request."""
        if self.refused:
            return
        self.refused = True
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"},
                                status_code=413)
        await response(self.scope, self._receive, self._send)

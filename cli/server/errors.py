"""Errors as JSON a person can act on, with the right status; never a traceback.

Also the two guards that must run before any route: the request-body cap (413 while the body is
still arriving, not after it was spooled to disk) and the query-string check (invalid UTF-8 is a
400, not a silent U+FFFD in the query).
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xmodal.indexer.errors import (
    ImageReadError,
    IndexLockedError,
    IndexNotFoundError,
    InvalidInputError,
    InvalidQueryError,
    ModelLoadError,
    ModelMismatchError,
    XmodalError,
)

__all__ = [
    "install_error_handlers",
    "BodyLimit",
    "QueryStringCheck",
    "SecurityHeaders",
    "LoopbackHostOnly",
    "status_of",
]

_log = logging.getLogger("xmodal.server")
_STATUS: list[tuple[type[XmodalError], int]] = [
    (InvalidQueryError, 400),
    (InvalidInputError, 400),
    (ImageReadError, 422),
    (IndexNotFoundError, 503),
    (IndexLockedError, 503),
    (ModelLoadError, 503),
    (ModelMismatchError, 503),
]


def status_of(error: XmodalError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def _json(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "status": status}, status_code=status, headers=headers)


def _validation_message(error: dict) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "body", "path", "form"))
    message = str(error.get("msg", "invalid value"))
    return f"{where}: {message}" if where else message


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(XmodalError)
    async def _domain(request: Request, exc: XmodalError) -> JSONResponse:
        return _json(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        messages = [_validation_message(e) for e in exc.errors()]
        return _json(422, "; ".join(messages) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("internal error on %s %s", request.method, request.url.path)
        return _json(500, "internal error; the server log has the details")


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413: by Content-Length before reading, and by
    counting while reading (a chunked upload has no length)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body is larger than the cap of {self.limit // (1024 * 1024)} MB"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _json(413, message)(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge
            return event

        async def tracking_send(event: Message) -> None:
            nonlocal started
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _json(413, message)(scope, receive, send)


class QueryStringCheck:
    """A query string that is not UTF-8 once percent-decoded is refused (400) before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            try:
                unquote_to_bytes(scope["query_string"].replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                await _json(400, "the query string is not valid UTF-8 (percent-encode UTF-8 bytes)")(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


# The page loads only its own files; paths and captions are inserted as text, and this policy makes
# an injected <script> or inline handler inert even if one slipped through.
_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class SecurityHeaders:
    """nosniff, no referrer, no framing and a strict CSP on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(event: Message) -> None:
            if event["type"] == "http.response.start":
                headers = list(event.get("headers", []))
                has_policy = any(name.lower() == b"content-security-policy" for name, _ in headers)
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if not has_policy:  # a route with its own policy (the login page) keeps it
                    headers.append((b"content-security-policy", _CSP.encode()))
                event = {**event, "headers": headers}
            await send(event)

        await self.app(scope, receive, with_headers)


class LoopbackHostOnly:
    """Requests must name a loopback Host (127.0.0.1, localhost, ::1): a web page elsewhere that
    reaches this server through DNS rebinding names its own host, and is refused (400)."""

    _ALLOWED = {"127.0.0.1", "localhost", "::1", "[::1]"}

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
            if name not in self._ALLOWED:
                await _json(
                    400,
                    "this server answers only requests for 127.0.0.1 or localhost "
                    "(start it with a token to serve other names)",
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)

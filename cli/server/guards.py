"""The checks every request passes before any route: body caps (413 while the body is still
arriving, not after it was spooled to disk), writes from foreign origins (403), multipart text
fields and query strings that are not UTF-8 (400), a foreign Host without a token (400), and the
security headers of every answer. Pure ASGI middleware: nothing here reads a body it does not pass on.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xmodal.cli.server.errors import json_error

__all__ = ["BodyLimit", "SameOriginWrites", "FormTextCheck", "QueryStringCheck", "SecurityHeaders", "LoopbackHostOnly"]


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses request bodies over their cap with 413: multipart bodies (pictures) over `upload_limit`,
    any other body (JSON, forms) over `json_limit`. By Content-Length before reading, and by counting
    while reading (a chunked body has no length): then whatever the route made of the cut body (a
    parser's 400) is replaced by the 413."""

    def __init__(self, app: ASGIApp, upload_limit: int, json_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/")
        limit = self.upload_limit if multipart else self.json_limit
        kind = "with pictures" if multipart else "(JSON or form)"
        message = f"the request body {kind} is larger than the cap of {_size(limit)}"
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await json_error(413, message)(scope, receive, send)
            return
        received = 0
        over = False
        replaced = False

        async def counting_receive() -> Message:
            nonlocal received, over
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge
            return event

        async def checked_send(event: Message) -> None:
            nonlocal replaced
            if over:  # the route saw a cut body: whatever it answers, the answer is 413
                if event["type"] == "http.response.start" and not replaced:
                    replaced = True
                    await json_error(413, message)(scope, receive, send)
                return
            await send(event)

        try:
            await self.app(scope, counting_receive, checked_send)
        except BodyTooLarge:
            if not replaced:
                await json_error(413, message)(scope, receive, send)


def _size(limit: int) -> str:
    return f"{limit / (1024 * 1024):g} MB" if limit >= 1024 * 1024 else f"{limit / 1024:g} KB"


class SameOriginWrites:
    """Browsers send a cross-origin form or multipart POST without asking first (no CORS preflight),
    so a page anywhere could make this server decode pictures or start runs. A request that changes
    state or uploads (any method but GET, HEAD, OPTIONS) is refused (403) when its `Origin` is neither
    this server's own nor one of `allowed` (--cors), or when `Sec-Fetch-Site` says `cross-site`.
    Clients that are not browsers send neither header and are not affected."""

    _SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...] = ()) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/").lower() for o in allowed)

    def _foreign(self, scope: Scope) -> str | None:
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin", b"").decode("latin-1").strip().rstrip("/").lower()
        own = f"{scope.get('scheme', 'http')}://{headers.get(b'host', b'').decode('latin-1').lower()}"
        if origin and origin != own and origin not in self.allowed:
            return f"Origin {origin}"
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
        if site == "cross-site" and not (origin and origin in self.allowed):
            return "a cross-site request"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method", "GET") not in self._SAFE:
            foreign = self._foreign(scope)
            if foreign is not None:
                await json_error(
                    403,
                    f"{foreign} may not send this request: only pages of this server (or --cors origins) may",
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _NotUtf8(Exception):
    pass


class _TextFields:
    """Fed a multipart body as it streams, notes the text fields (not files) that are not UTF-8."""

    def __init__(self, boundary: bytes) -> None:
        self.bad: list[str] = []
        self._header = b""
        self._disposition = b""
        self._data = bytearray()
        self._parser = MultipartParser(
            boundary,
            {  # type: ignore[arg-type]
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_part_data": self._part_data,
                "on_part_end": self._end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except Exception:  # noqa: BLE001 - a malformed body: the route's own parser answers it
            pass

    def _fields(self) -> dict[bytes, bytes]:
        return parse_options_header(self._disposition)[1]

    def _begin(self) -> None:
        self._header, self._disposition, self._data = b"", b"", bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition += data[start:end]

    def _header_end(self) -> None:
        self._header = b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if b"filename" not in self._fields():
            self._data += data[start:end]

    def _end(self) -> None:
        fields = self._fields()
        if b"filename" not in fields:
            try:
                self._data.decode("utf-8")
            except UnicodeDecodeError:
                self.bad.append(fields.get(b"name", b"?").decode("latin-1"))


class FormTextCheck:
    """Text fields of a multipart body (e.g. `q` next to an uploaded picture) must be UTF-8: the
    form parser would otherwise read invalid bytes as Latin-1 and search for mojibake. The body is
    parsed alongside as it streams to the route (files are skipped); a bad field ends the request
    with 400 before the route runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        content_type, options = parse_options_header(headers.get(b"content-type", b""))
        boundary = options.get(b"boundary")
        if scope["type"] != "http" or content_type != b"multipart/form-data" or not boundary:
            await self.app(scope, receive, send)
            return
        fields = _TextFields(boundary)
        replaced = False

        async def checking_receive() -> Message:
            event = await receive()
            if event["type"] == "http.request" and not fields.bad:
                fields.feed(event.get("body", b""))
                if fields.bad:
                    raise _NotUtf8
            return event

        async def checked_send(event: Message) -> None:
            nonlocal replaced
            if fields.bad:  # the route saw a cut body: whatever it answers, the answer is 400
                if event["type"] == "http.response.start" and not replaced:
                    replaced = True
                    await json_error(400, _not_utf8(fields.bad[0]))(scope, receive, send)
                return
            await send(event)

        try:
            await self.app(scope, checking_receive, checked_send)
        except _NotUtf8:
            if not replaced:
                await json_error(400, _not_utf8(fields.bad[0]))(scope, receive, send)


def _not_utf8(field: str) -> str:
    return f"{field}: the form field is not valid UTF-8 text"


class QueryStringCheck:
    """A query string that is not UTF-8 once percent-decoded is refused (400) before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            try:
                unquote_to_bytes(scope["query_string"].replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                await json_error(400, "the query string is not valid UTF-8 (percent-encode UTF-8 bytes)")(
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
                await json_error(
                    400,
                    "this server answers only requests for 127.0.0.1 or localhost "
                    "(start it with a token to serve other names)",
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)

"""Who may call: a bearer token, or the session cookie the login form sets for the web page.

With no token configured (loopback only) everyone on this machine may call. With a token, every
route but /api/health needs `Authorization: Bearer TOKEN` or the cookie. Comparisons are
constant-time (hmac.compare_digest). The cookie holds an HMAC of the token, never the token.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request

__all__ = ["Auth", "COOKIE", "require_auth"]

COOKIE = "xmodal_session"


class Auth:
    def __init__(self, token: str | None) -> None:
        self.enabled = bool(token)
        secret = (token or "").encode("utf-8")
        self._token = secret
        self._session = hmac.new(secret, b"xmodal web session v1", hashlib.sha256).hexdigest() if token else ""

    @property
    def session_value(self) -> str:
        return self._session

    def token_matches(self, candidate: str) -> bool:
        return self.enabled and hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token)

    def allows(self, request: Request) -> bool:
        if not self.enabled:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(value.strip()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode("utf-8", "surrogateescape"), self._session.encode())


async def require_auth(request: Request) -> None:
    """Dependency of every protected router: 401 with a hint when the token is wrong or missing.
    `async` (it never blocks): FastAPI runs it on the event loop, not through a worker thread."""
    auth: Auth = request.app.state.xmodal.auth
    if not auth.allows(request):
        raise HTTPException(
            401,
            "a valid token is required: send 'Authorization: Bearer TOKEN' or log in at /login",
            headers={"WWW-Authenticate": 'Bearer realm="xmodal"'},
        )

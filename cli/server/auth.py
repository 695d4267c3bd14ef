"""Who may call: a bearer token, or the session cookie the login form sets for the web page.

With no token configured (loopback only) everyone on this machine may call. With a token, every
route but /api/health needs `Authorization: Bearer TOKEN` or the cookie. Comparisons are
constant-time (hmac.compare_digest). The cookie holds a random session id that the server keeps
(at most `Limits.max_sessions`, the oldest signed out first), never the token: logging out forgets
the id, so a copied cookie stops working. Failed logins are counted per client address: beyond
`Limits.max_failed_logins` within `Limits.failed_login_window` seconds, the form answers 429.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque

from fastapi import HTTPException, Request

from xmodal.indexer.limits import DEFAULT_LIMITS, Limits

__all__ = ["Auth", "COOKIE", "require_auth"]

COOKIE = "xmodal_session"


class Auth:
    def __init__(self, token: str | None, limits: Limits = DEFAULT_LIMITS) -> None:
        self.enabled = bool(token)
        self._token = (token or "").encode("utf-8")
        self._limits = limits
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, float] = OrderedDict()  # digest of an id -> when it was opened
        self._failures: dict[str, deque[float]] = {}  # client address -> times of failed logins

    def token_matches(self, candidate: str) -> bool:
        return self.enabled and hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token)

    # --- sessions of the web page ------------------------------------------------------------
    @staticmethod
    def _digest(session: str) -> str:
        # Kept and looked up by digest: a lookup's timing says nothing about the ids themselves.
        return hashlib.sha256(session.encode("utf-8", "surrogateescape")).hexdigest()

    def open_session(self) -> str:
        """A new random session id, remembered; the oldest is forgotten beyond the bound."""
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[self._digest(session)] = time.time()
            while len(self._sessions) > max(1, self._limits.max_sessions):
                self._sessions.popitem(last=False)
        return session

    def close_session(self, session: str) -> None:
        with self._lock:
            self._sessions.pop(self._digest(session), None)

    def _session_known(self, cookie: str) -> bool:
        if not cookie:
            return False
        with self._lock:
            return self._digest(cookie) in self._sessions

    # --- failed logins -----------------------------------------------------------------------
    def _recent_failures(self, address: str, now: float) -> deque[float]:
        window = self._limits.failed_login_window
        for client in [c for c, times in self._failures.items() if not times or now - times[-1] > window]:
            del self._failures[client]  # the table holds only addresses that failed within the window
        times = self._failures.setdefault(address, deque())
        while times and now - times[0] > window:
            times.popleft()
        return times

    def login_blocked_for(self, address: str) -> float:
        """Seconds until `address` may try again (0: it may now)."""
        now = time.monotonic()
        with self._lock:
            times = self._recent_failures(address, now)
            if len(times) < self._limits.max_failed_logins:
                return 0.0
            return max(0.0, times[0] + self._limits.failed_login_window - now)

    def login_failed(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent_failures(address, now).append(now)

    # --- the check of every protected request ------------------------------------------------
    def allows(self, request: Request) -> bool:
        if not self.enabled:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(value.strip()):
            return True
        return self._session_known(request.cookies.get(COOKIE, ""))


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

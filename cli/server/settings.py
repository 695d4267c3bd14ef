"""What one server instance is allowed to do, decided once by `xmodal serve` and passed to the app."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from xmodal.indexer.limits import DEFAULT_LIMITS, Limits

__all__ = ["ServerSettings", "is_loopback"]


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and 'localhost' reach only this machine; every other address may not."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class ServerSettings:
    """token: required on every route but /api/health when set; cors_origins: browser origins
    allowed to call the API (none: no CORS headers at all); allow_index: POST /api/index may start
    indexing runs under the index's folders (and roots); loopback_only: the server listens on a
    loopback address, so requests must name a loopback Host (a DNS-rebinding guard when no token);
    limits: every bound on a request (sizes, counts, pixels, decodes at once, the thumbnail cache)."""

    token: str | None = None
    allow_index: bool = False
    cors_origins: tuple[str, ...] = ()
    roots: tuple[Path, ...] = ()
    loopback_only: bool = True
    limits: Limits = DEFAULT_LIMITS
    thumbnail_dir: Path | None = None  # default: <cache>/thumbnails
    thumbnail_size: int = 320
    # Engine calls at once: more than the cores only makes every call slower.
    search_threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    refresh_interval: float = 1.0  # seconds between checks for writes by other processes

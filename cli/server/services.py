"""What the routes share, held by the app (app.state.xmodal), handed to routes as a dependency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi import Request

from xmodal.cli.server.auth import Auth
from xmodal.cli.server.jobs import IndexJobs
from xmodal.cli.server.live import LiveEngine
from xmodal.cli.server.pictures import Decoder
from xmodal.cli.server.settings import ServerSettings
from xmodal.cli.server.thumbnails import ThumbnailCache
from xmodal.indexer.roots import indexed_roots, minimal_folders
from xmodal.search.engine import SearchEngine

__all__ = ["Services", "get_services"]


@dataclass
class Services:
    live: LiveEngine
    settings: ServerSettings
    auth: Auth
    thumbnails: ThumbnailCache
    jobs: IndexJobs | None = None
    decoder: Decoder = field(init=False)
    _gate: threading.BoundedSemaphore = field(init=False)
    _roots: tuple[int, list[str]] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._gate = threading.BoundedSemaphore(self.settings.search_threads)
        self.decoder = Decoder(self.settings.limits.concurrent_decodes)

    @property
    def engine(self) -> SearchEngine:
        return self.live.get()

    @contextmanager
    def searching(self) -> Iterator[SearchEngine]:
        """The engine, entered by at most `search_threads` requests at once (more only oversubscribe the cores)."""
        engine = self.live.get()
        with self._gate:
            yield engine

    def roots(self) -> list[str]:
        """The folders the user indexed (plus --root folders): what may be re-indexed or watched."""
        key = self.live.swaps
        if self._roots is None or self._roots[0] != key:
            folders = indexed_roots(self.engine.store.metadata) + [str(r) for r in self.settings.roots]
            self._roots = (key, minimal_folders(folders))
        return self._roots[1]


async def get_services(request: Request) -> Services:
    """`async` (it never blocks): FastAPI runs it on the event loop, not through a worker thread."""
    return request.app.state.xmodal

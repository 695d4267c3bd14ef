"""The app factory: one FastAPI app around one search engine, with nothing at module level.

    app = create_app(SearchEngine.open("idx"), ServerSettings(token="..."))

Everything the routes share lives in `app.state.xmodal` (a Services object) and reaches them as a
dependency; the engine comes in from outside, so tests hand in one with a fake model.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware

from xmodal.cli.server.auth import Auth, require_auth
from xmodal.cli.server.errors import install_error_handlers
from xmodal.cli.server.guards import (
    BodyLimit,
    FormTextCheck,
    LoopbackHostOnly,
    QueryStringCheck,
    SameOriginWrites,
    SecurityHeaders,
)
from xmodal.cli.server.jobs import IndexJobs
from xmodal.cli.server.live import LiveEngine
from xmodal.cli.server.routes import browse, embed, index, items, pages, search
from xmodal.cli.server.services import Services
from xmodal.cli.server.settings import ServerSettings
from xmodal.cli.server.thumbnails import ThumbnailCache
from xmodal.indexer.indexing import Indexer
from xmodal.indexer.store.index_store import IndexStore
from xmodal.search.engine import SearchEngine

__all__ = ["create_app", "default_thumbnail_dir"]

_DESCRIPTION = """Cross-modal search over one xmodal index: photos by text, by picture or both; texts by picture.
With a token, send `Authorization: Bearer TOKEN` on every call but `/api/health`."""


def default_thumbnail_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("XMODAL_CACHE") or user_cache_dir("xmodal")) / "thumbnails"


def create_app(
    engine: SearchEngine,
    settings: ServerSettings | None = None,
    *,
    reopen: Callable[[], IndexStore] | None = None,
    indexer: Indexer | None = None,
    close_engine: bool = False,
) -> FastAPI:
    """An ASGI app serving `engine`'s index.

    reopen: opens the index again when another process has written it (default: the same folder);
    indexer: used for POST /api/index when settings.allow_index (default: one for the same folder);
        not the watcher's (each reports its own progress), though it may share the watcher's model;
    close_engine: close the engine when the app shuts down (the CLI's case; tests keep theirs).
    """
    settings = settings or ServerSettings()
    directory = engine.store.directory
    live = LiveEngine(engine, reopen or (lambda: IndexStore.open(directory)), interval=settings.refresh_interval)
    jobs = None
    if settings.allow_index:
        jobs = IndexJobs(indexer or Indexer(directory), on_finished=live.refresh)
    services = Services(
        live=live,
        settings=settings,
        auth=Auth(settings.token, settings.limits),
        thumbnails=ThumbnailCache(
            settings.thumbnail_dir or default_thumbnail_dir(),
            settings.limits.thumbnail_cache_bytes,
            settings.thumbnail_size,
        ),
        jobs=jobs,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if jobs is not None:
            jobs.stop(60)
        services.decoder.close()
        if close_engine:
            live.close()

    app = FastAPI(
        title="xmodal",
        description=_DESCRIPTION,
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served by pages.docs_page, offline and behind the token
        redoc_url=None,
        openapi_url=None,
    )
    app.state.xmodal = services
    app.state.static = pages.StaticFiles()
    install_error_handlers(app, settings.limits.max_error_items)

    protected = [Depends(require_auth)]
    app.include_router(index.health_router)
    app.include_router(index.router)
    app.include_router(search.router, dependencies=protected)
    app.include_router(items.router, dependencies=protected)
    app.include_router(browse.router, dependencies=protected)
    app.include_router(embed.router, dependencies=protected)
    app.include_router(pages.public_router)
    app.include_router(pages.router)

    # Middleware: the last added runs first.
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    if settings.loopback_only and not settings.token:
        # Without a token, only this machine may call; a page elsewhere could still reach 127.0.0.1
        # through DNS rebinding, and then its requests name a foreign Host: refused.
        app.add_middleware(LoopbackHostOnly)
    app.add_middleware(QueryStringCheck)
    app.add_middleware(FormTextCheck)
    app.add_middleware(
        BodyLimit, upload_limit=settings.limits.max_upload_bytes, json_limit=settings.limits.max_json_bytes
    )
    app.add_middleware(SameOriginWrites, allowed=tuple(settings.cors_origins))
    app.add_middleware(SecurityHeaders)
    return app

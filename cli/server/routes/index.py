"""The index itself: health, facts, files that failed, and indexing runs (with --allow-index)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse

from xmodal.cli.server.auth import require_auth
from xmodal.cli.server.models import FailureOut, HealthOut, IndexRequest, IndexStatus, InfoOut
from xmodal.cli.server.params import clean_text
from xmodal.cli.server.services import Services, get_services
from xmodal.indexer.signals import DEFAULT_SIGNALS
from xmodal.indexer.store.schema import ImageRow, TextRow
from xmodal.search.stats import failure_counts

__all__ = ["health_router", "router"]

health_router = APIRouter(prefix="/api", tags=["index"])
router = APIRouter(prefix="/api", tags=["index"], dependencies=[Depends(require_auth)])
ServicesDep = Annotated[Services, Depends(get_services)]


@health_router.get("/health", response_model=HealthOut, summary="Liveness; needs no token")
async def health() -> HealthOut:
    """On the event loop, never in the worker threads: it answers while every worker is busy."""
    return HealthOut(status="ok")


@router.get("/info", response_model=InfoOut, summary="What the index holds")
def info(services: ServicesDep) -> InfoOut:
    store = services.engine.store
    errors, skipped = failure_counts(store.metadata.failures())
    return InfoOut(
        index=str(store.directory),
        images=store.metadata.count(ImageRow),
        texts=store.metadata.count(TextRow),
        errors=errors,
        skipped=skipped,
        model=store.model_spec,
        dim=store.dim,
        size_bytes=store.size_bytes(),
        roots=services.roots(),
        read_only=services.jobs is None,
        auth=services.auth.enabled,
        reloads=services.live.swaps,
        signals={signal.name: signal.info(store) for signal in DEFAULT_SIGNALS},
    )


@router.get("/errors", response_model=list[FailureOut], summary="Files that could not be indexed, with reasons")
def errors(services: ServicesDep) -> list[FailureOut]:
    return [FailureOut(path=f.path, reason=f.reason) for f in services.engine.store.metadata.failures()]


@router.get("/index", response_model=IndexStatus, summary="The progress of the indexing run started over HTTP")
def index_status(services: ServicesDep) -> IndexStatus:
    if services.jobs is None:
        return IndexStatus(state="idle")
    return IndexStatus(**services.jobs.status())  # type: ignore[arg-type]


@router.post(
    "/index",
    response_model=IndexStatus,
    status_code=202,
    summary="Start an indexing run of folders under the index's folders (needs --allow-index)",
)
def start_index(services: ServicesDep, request: IndexRequest) -> JSONResponse:
    if services.jobs is None:
        raise HTTPException(403, "this server is read-only; start it with --allow-index to index over HTTP")
    for i, path in enumerate(request.paths):
        clean_text(path, f"paths[{i}]")
    status = services.jobs.start(request.paths, services.roots())
    return JSONResponse(IndexStatus(**status).model_dump(), status_code=202)  # type: ignore[arg-type]

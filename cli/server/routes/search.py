"""Searching: by text, by an uploaded picture, by an indexed photo's id, or all combined; and batches."""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Response, UploadFile
from PIL import Image

from xmodal.cli.server.models import BatchResult, BatchSearchRequest, BatchSearchResponse, SearchResponse
from xmodal.cli.server.params import (
    SearchOptions,
    check_within,
    clean_texts,
    search_filter,
    search_options_dependency,
    text_terms,
)
from xmodal.cli.server.pictures import QUERY_SIZE, Upload, read_uploads
from xmodal.cli.server.routes.shaping import json_response, page
from xmodal.cli.server.services import Services, get_services
from xmodal.indexer.limits import DEFAULT_LIMITS
from xmodal.search.engine import SearchEngine
from xmodal.search.hits import Hit
from xmodal.search.query import how_read

__all__ = ["router", "run_search"]

router = APIRouter(prefix="/api", tags=["search"])

ServicesDep = Annotated[Services, Depends(get_services)]
OptionsDep = Annotated[SearchOptions, Depends(search_options_dependency)]
ItemId = Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Search by an indexed photo (its id).")]
_MAX_TEXT = DEFAULT_LIMITS.max_query_chars  # the declared bound; the server's own limits are checked too


def _item_vector(engine: SearchEngine, item_id: int) -> np.ndarray:
    vectors = engine.vectors([item_id], "image")
    if len(vectors) == 0:
        raise HTTPException(404, f"no photo with id {item_id} in the index")
    return vectors[0]


def _similar(engine: SearchEngine, item_id: int, options: SearchOptions) -> list[Hit]:
    _item_vector(engine, item_id)  # 404 before searching
    return engine.similar(
        item_id,
        k=options.depth,
        kind="image",
        target=options.target,
        min_score=options.min_score,
        filters=options.filters,
        rerank=options.rerank,
    )


def run_search(
    services: Services, options: SearchOptions, q: str | None, like: int | None, picture: Image.Image | None
) -> SearchResponse:
    """One search from any mix of a text, a picture and an indexed photo (their vectors are added)."""
    started = time.perf_counter()
    limits = services.settings.limits
    check_within(options, limits)
    if q is not None and len(q) > limits.max_query_chars:
        raise HTTPException(422, f"q: longer than {limits.max_query_chars} characters")
    text = q if q is not None and q.strip() else None
    if q is not None and text is None:
        raise HTTPException(400, "q: the query text is empty")
    if text is None and like is None and picture is None:
        raise HTTPException(400, "give a query: q=TEXT, an uploaded picture (field 'image') or like=ID")
    terms = text_terms(text) if text is not None else None
    with services.searching() as engine:
        if not engine.store.model_spec:  # nothing indexed yet: an empty result, not an error
            return page([], options, (time.perf_counter() - started) * 1000)
        search = dict(
            k=options.depth,
            target=options.target,
            filters=options.filters,
            rerank=options.rerank,
            min_score=options.min_score,
        )
        if terms is not None and like is None and picture is None:
            hits = engine.search(terms, **search)  # type: ignore[arg-type]
        elif picture is not None and terms is None and like is None:
            hits = engine.search(picture, **search)  # type: ignore[arg-type]
        elif like is not None and terms is None and picture is None:
            hits = _similar(engine, like, options)
        else:
            total = np.zeros(engine.store.dim or 0, dtype=np.float32)
            if terms is not None:
                total += engine.embed_query(terms)
            if picture is not None:
                total += engine.embed_image_query(picture)
            if like is not None:
                total += _item_vector(engine, like)
            norm = float(np.linalg.norm(total))
            if norm < 1e-6:
                raise HTTPException(400, "the query's parts cancel each other out")
            hits = engine.search(total / norm, **search)  # type: ignore[arg-type]
    response = page(hits, options, (time.perf_counter() - started) * 1000)
    response.reading = how_read(terms) if terms is not None else None
    return response


@router.get("/search", response_model=SearchResponse, summary="Search by text (and/or an indexed photo)")
def search_get(
    services: ServicesDep,
    options: OptionsDep,
    q: Annotated[
        str | None,
        Query(
            max_length=_MAX_TEXT, description='Text, or a combination: \'"dog" + "beach" - "snow"\', weights as 2:term.'
        ),
    ] = None,
    like: ItemId = None,
) -> Response:
    return json_response(run_search(services, options, q, like, None))


@router.post(
    "/search", response_model=SearchResponse, summary="Search by an uploaded picture (and/or text, an indexed photo)"
)
def search_post(
    services: ServicesDep,
    options: OptionsDep,
    image: Annotated[
        UploadFile | None, File(description="A picture; its content decides, not its name or type.")
    ] = None,
    q: Annotated[str | None, Form(max_length=_MAX_TEXT)] = None,
    like: Annotated[int | None, Form(ge=1, le=2**63 - 1)] = None,
) -> Response:
    picture = None
    if image is not None:
        upload = Upload("image", image.file.read())
        picture = read_uploads([upload], services.settings.limits, services.decoder, QUERY_SIZE)[0]
    return json_response(run_search(services, options, q, like, picture))


@router.post("/search/batch", response_model=BatchSearchResponse, summary="Many text queries at once: ids and scores")
def search_batch(services: ServicesDep, request: BatchSearchRequest) -> BatchSearchResponse:
    started = time.perf_counter()
    limits = services.settings.limits
    queries = clean_texts(request.queries, "queries", limits)
    if request.limit > limits.max_k:
        raise HTTPException(422, f"limit must be at most {limits.max_k} (got {request.limit})")
    filters = search_filter(request.under, request.after, request.before, request.ext, request.min_size, limits)
    results: list[BatchResult] = []
    step = max(1, limits.texts_per_model_call)
    for start in range(0, len(queries), step):  # a few at a time: memory grows with the queries searched at once
        chunk = queries[start : start + step]
        with services.searching() as engine:
            if not engine.store.model_spec:
                results += [BatchResult(query=t, ids=[], scores=[]) for t in request.queries[start : start + step]]
                continue
            scores, ids = engine.search_texts(
                chunk, k=request.limit, target=request.target, filters=filters, rerank=request.rerank
            )
        results += [
            BatchResult(
                query=t,
                ids=[int(i) for i in row_ids if i >= 0],
                scores=[round(float(s), 6) for s, i in zip(row_scores, row_ids) if i >= 0],
            )
            for t, row_scores, row_ids in zip(request.queries[start : start + step], scores, ids)
        ]
    return BatchSearchResponse(
        results=results, target=request.target, took_ms=round((time.perf_counter() - started) * 1000, 2)
    )

"""Searching: by text, by an uploaded picture, by an indexed photo's id, or all combined; and batches."""

from __future__ import annotations

import time
from collections.abc import Sequence
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
from xmodal.search.understanding import Understood, read_literally

__all__ = ["router", "run_search"]

router = APIRouter(prefix="/api", tags=["search"])

ServicesDep = Annotated[Services, Depends(get_services)]
OptionsDep = Annotated[SearchOptions, Depends(search_options_dependency)]
ItemId = Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Search by an indexed photo (its id).")]
_MAX_TEXT = DEFAULT_LIMITS.max_query_chars
_LITERAL = "Search q as one description: read no dates, places, words in the photo or names out of it."
_IGNORE = "Parts of q not to read (their words stay in the description): date, place, text_in_photo, name."
_IGNORABLE = ("date", "place", "text_in_photo", "name")  # the declared bound; the server's own limits are checked too


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
    services: Services,
    options: SearchOptions,
    q: str | None,
    like: int | None,
    picture: Image.Image | None,
    in_photo: str | None = None,
    literal: bool = False,
    ignore: Sequence[str] = (),
) -> SearchResponse:
    """One search from any mix of a text, a picture and an indexed photo (their vectors are added),
    and/or the words in the photos (`in_photo`: only photos whose text holds them)."""
    started = time.perf_counter()
    limits = services.settings.limits
    check_within(options, limits)
    if q is not None and len(q) > limits.max_query_chars:
        raise HTTPException(422, f"q: longer than {limits.max_query_chars} characters")
    text = q if q is not None and q.strip() else None
    if q is not None and text is None:
        raise HTTPException(400, "q: the query text is empty")
    if in_photo is not None and len(in_photo) > limits.max_query_chars:
        raise HTTPException(422, f"in_photo: longer than {limits.max_query_chars} characters")
    if in_photo is not None and not in_photo.strip():
        raise HTTPException(400, "in_photo: the text is empty")
    if in_photo is not None and options.target != "image":
        raise HTTPException(400, "in_photo searches photos: target must be image")
    if text is None and like is None and picture is None and in_photo is None:
        raise HTTPException(400, "give a query: q=TEXT, an uploaded picture (field 'image'), like=ID or in_photo=TEXT")
    terms = text_terms(text) if text is not None else None
    understood: Understood | None = None
    with services.searching() as engine:
        if not engine.store.model_spec:  # nothing indexed yet: an empty result, not an error
            return page([], options, (time.perf_counter() - started) * 1000)
        search = dict(
            k=options.depth,
            target=options.target,
            filters=options.filters,
            rerank=options.rerank,
            min_score=options.min_score,
            in_photo=in_photo,
        )
        if terms is None and like is None and picture is None:  # the words in the photos alone
            hits = engine.search(None, **search)  # type: ignore[arg-type]
        elif terms is not None and like is None and picture is None and not literal and options.target == "image":
            if in_photo is None and text is not None:
                understood = engine.understand(text, ignore=ignore)
                hits = engine.search(understood, **search)  # type: ignore[arg-type]
            else:
                hits = engine.search(terms, **search)  # type: ignore[arg-type]
        elif terms is not None and like is None and picture is None:
            hits = engine.search(terms, **search)  # type: ignore[arg-type]
        elif picture is not None and terms is None and like is None:
            hits = engine.search(picture, **search)  # type: ignore[arg-type]
        elif like is not None and terms is None and picture is None and in_photo is None:
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
    if understood is None and text is not None:  # searched as it is: only its language is read
        understood = read_literally(text)
    response.understood = understood.as_dict() if understood is not None else None
    response.reading = how_read(terms) if terms is not None else None  # deprecated: `understood` says it
    return response


def _ignored(ignore: list[str] | None) -> list[str]:
    wrong = [part for part in ignore or () if part not in _IGNORABLE]
    if wrong:
        raise HTTPException(422, f"ignore: one of {', '.join(_IGNORABLE)}, not {', '.join(wrong)}")
    return list(ignore or ())


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
    in_photo: Annotated[
        str | None,
        Query(
            max_length=_MAX_TEXT,
            description="Only photos whose text (read at indexing) holds these words, one wrong character "
            "tolerated; alone: best text match first; with q: ranked by q.",
        ),
    ] = None,
    literal: Annotated[bool, Query(description=_LITERAL)] = False,
    ignore: Annotated[list[str] | None, Query(max_length=4, description=_IGNORE)] = None,
) -> Response:
    return json_response(run_search(services, options, q, like, None, in_photo, literal, _ignored(ignore)))


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
    in_photo: Annotated[str | None, Form(max_length=_MAX_TEXT)] = None,
    literal: Annotated[bool, Form(description=_LITERAL)] = False,
    ignore: Annotated[list[str] | None, Form(max_length=4, description=_IGNORE)] = None,
) -> Response:
    picture = None
    if image is not None:
        upload = Upload("image", image.file.read())
        picture = read_uploads([upload], services.settings.limits, services.decoder, QUERY_SIZE)[0]
    return json_response(run_search(services, options, q, like, picture, in_photo, literal, _ignored(ignore)))


@router.post("/search/batch", response_model=BatchSearchResponse, summary="Many text queries at once: ids and scores")
def search_batch(services: ServicesDep, request: BatchSearchRequest) -> BatchSearchResponse:
    started = time.perf_counter()
    limits = services.settings.limits
    queries = clean_texts(request.queries, "queries", limits)
    if request.limit > limits.max_k:
        raise HTTPException(422, f"limit must be at most {limits.max_k} (got {request.limit})")
    filters = search_filter(
        request.under, request.after, request.before, request.ext, request.min_size, limits, place=request.place
    )
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

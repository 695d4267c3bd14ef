"""Engine results as API bodies: hits with their URLs, pages with their cursor, and their JSON."""

from __future__ import annotations

import os
from collections.abc import Sequence

from fastapi import Response
from pydantic import BaseModel

from xmodal.cli.server.models import HitOut, SearchResponse
from xmodal.cli.server.params import SearchOptions, encode_cursor
from xmodal.search.hits import Hit

__all__ = ["hit_out", "page", "json_response"]


def hit_out(hit: Hit) -> HitOut:
    image = hit.kind in ("image", "video")
    moment = f"?t={hit.time:g}" if hit.time is not None else ""
    return HitOut(
        id=hit.id,
        kind=hit.kind,
        score=round(float(hit.score), 6),
        path=hit.path,
        name=os.path.basename(hit.path),
        text=hit.text,
        copies=hit.copies,
        thumbnail=f"/api/items/{hit.id}/thumbnail{moment}" if image else None,
        url=f"/api/items/{hit.id}/file{moment.replace('?', '#')}" if image else None,  # a media fragment
        time=hit.time,
        pair=list(hit.pair),
        matched=list(hit.matched),
    )


def page(hits: Sequence[Hit], options: SearchOptions, took_ms: float) -> SearchResponse:
    """One page of hits; the engine was asked for one more than the page to know if more follow."""
    shown = hits[options.offset : options.offset + options.limit]
    more = len(hits) > options.offset + options.limit
    return SearchResponse(
        hits=[hit_out(h) for h in shown],
        offset=options.offset,
        limit=options.limit,
        next_cursor=encode_cursor(options.offset + options.limit) if more else None,
        target=options.target,
        took_ms=round(took_ms, 2),
    )


def json_response(body: BaseModel) -> Response:
    """`body` as JSON, the same bytes FastAPI sends for a route's response_model. A route that returns
    its model instead has it validated again and serialised, and for a `def` route the validation
    runs in a worker thread: a second hop per request, for a body built from validated models."""
    return Response(body.model_dump_json(), media_type="application/json")

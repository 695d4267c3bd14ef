"""Engine results as API bodies: hits with their URLs, pages with their cursor."""

from __future__ import annotations

import os
from collections.abc import Sequence

from xmodal.cli.server.models import HitOut, SearchResponse
from xmodal.cli.server.params import SearchOptions, encode_cursor
from xmodal.search.hits import Hit

__all__ = ["hit_out", "page"]


def hit_out(hit: Hit) -> HitOut:
    image = hit.kind == "image"
    return HitOut(
        id=hit.id,
        kind=hit.kind,
        score=round(float(hit.score), 6),
        path=hit.path,
        name=os.path.basename(hit.path),
        text=hit.text,
        thumbnail=f"/api/items/{hit.id}/thumbnail" if image else None,
        url=f"/api/items/{hit.id}/file" if image else None,
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

"""Query-string options shared by the search routes, checked once and turned into engine arguments."""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, ParamSpec, TypeVar

from fastapi import HTTPException, Query

from xmodal.indexer.images import IMAGE_EXTENSIONS
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits
from xmodal.search.filters import SearchFilter, parse_date, parse_min_size
from xmodal.search.query import QueryTerm, parse_query
from xmodal.search.rerank.stages import RerankOptions

__all__ = [
    "SearchOptions",
    "check_within",
    "clean_texts",
    "search_filter",
    "search_options",
    "search_options_dependency",
    "clean_text",
    "text_terms",
    "encode_cursor",
]

# The parameters' declared bounds (they are also the OpenAPI schema) are the default limits; a server
# built with other limits checks them again at run time (check_within).
_MAX_K = DEFAULT_LIMITS.max_k
_MAX_TEXT = DEFAULT_LIMITS.max_query_chars
_MAX_DEPTH = DEFAULT_LIMITS.max_depth
# "~name" at the start of a term would be expanded to a user's home folder; whether that user exists
# must not change the answer (a user-name oracle), so such a term is refused whoever it names.
_HOME_TERM = re.compile(r"""(?:^|[\s"'+\-:])~[^\s/"'+\-]""")
_ALLOWED_CONTROLS = {"\t", "\n", "\r"}
_P = ParamSpec("_P")
_T = TypeVar("_T")


def clean_text(value: str, field: str) -> str:
    """A text parameter without control characters (400), as people type them."""
    for ch in value:
        if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS:
            raise HTTPException(400, f"{field} contains a control character (U+{ord(ch):04X})")
    return value


def clean_texts(texts: list[str], field: str, limits: Limits) -> list[str]:
    """Texts of a batch request, checked before any is embedded: at most `max_texts_per_request`
    (422), each at most `max_query_chars` (422), no control characters or empty text (400), and
    all together at most `max_chars_per_request` (413). Whitespace runs become one space."""
    if len(texts) > limits.max_texts_per_request:
        raise HTTPException(422, f"{field}: at most {limits.max_texts_per_request} in one request (got {len(texts)})")
    total = 0
    cleaned = []
    for i, text in enumerate(texts):
        if len(text) > limits.max_query_chars:
            raise HTTPException(422, f"{field}[{i}]: longer than {limits.max_query_chars} characters")
        total += len(text)
        if total > limits.max_chars_per_request:
            raise HTTPException(
                413,
                f"{field}: more than {limits.max_chars_per_request} characters in one request; send fewer or shorter",
            )
        clean_text(text, f"{field}[{i}]")
        words = " ".join(text.split())
        if not words:
            raise HTTPException(400, f"{field}[{i}]: the text is empty")
        cleaned.append(words)
    return cleaned


def text_terms(q: str) -> list[QueryTerm]:
    """The terms of a query text. Over HTTP every term is text: no endpoint reads a file named by a
    client, so a term that looks like a picture's file name is refused whether or not it exists
    (the answer must not tell which files exist on the server)."""
    clean_text(q, "q")
    if _HOME_TERM.search(q):
        raise HTTPException(422, "q: '~name' (a home folder) is not read over HTTP; leave out the '~'")
    terms = parse_query(q)
    for term in terms:
        value = term.value.strip()
        looks_like_file = term.kind == "image" or (
            " " not in value and os.path.splitext(value)[1].lower() in IMAGE_EXTENSIONS
        )
        if looks_like_file:
            raise HTTPException(
                422,
                f"q: file paths are not read over HTTP ({value!r}); upload the picture (POST /api/search, field "
                "'image') or name an indexed photo with like=ID",
            )
    return terms


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, number = raw.partition(":")
        if kind != "o" or not number.isdigit():
            raise ValueError(raw)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(
            422, "cursor: not a cursor this server handed out (use next_cursor from a previous page)"
        ) from None


@dataclass(frozen=True)
class SearchOptions:
    limit: int
    offset: int
    target: Literal["image", "text"]
    filters: SearchFilter
    rerank: RerankOptions | bool
    min_score: float | Literal["auto"] | None

    @property
    def depth(self) -> int:
        """Hits to ask the engine for: this page, everything before it, and one to know if more follow."""
        return self.offset + self.limit + 1


def check_within(options: SearchOptions, limits: Limits) -> None:
    """422 when a page goes beyond this server's limits (the declared bounds are the defaults)."""
    if options.limit > limits.max_k:
        raise HTTPException(422, f"limit must be at most {limits.max_k} (got {options.limit})")
    if options.offset + options.limit > limits.max_depth:
        raise HTTPException(
            422, f"offset + limit must be at most {limits.max_depth} (got {options.offset + options.limit})"
        )


def _under(under: str) -> Path:
    """An absolute folder, taken literally: over HTTP nothing is resolved against the server's
    working folder, and no `~` is expanded (whether a user exists must not change the answer)."""
    if not os.path.isabs(under):
        raise HTTPException(400, f"under must be an absolute folder, e.g. /home/me/Pictures, not {under!r}")
    return Path(under)


def _min_size(text: str, limits: Limits) -> tuple[int, int]:
    width, height = parse_min_size(text)
    # No picture in the index is wider or taller than the pixel cap; beyond it the number means nothing
    # (and would overflow the database's integers).
    if width > limits.max_pixels or height > limits.max_pixels:
        raise HTTPException(400, f"min_size: each side must be at most {limits.max_pixels} pixels, not {text!r}")
    return width, height


def search_filter(
    under: str | None,
    after: str | None,
    before: str | None,
    ext: list[str] | None,
    min_size: str | None,
    limits: Limits = DEFAULT_LIMITS,
    place: str | None = None,
) -> SearchFilter:
    """The CLI's filters from their text forms (a bad date or size raises InvalidQueryError: 400)."""
    for name, value in (
        ("under", under),
        ("after", after),
        ("before", before),
        ("min_size", min_size),
        ("place", place),
    ):
        if value is not None:
            clean_text(value, name)
    width, height = _min_size(min_size, limits) if min_size else (0, 0)
    return SearchFilter(
        under=_under(under) if under else None,
        after=parse_date(after) if after else None,
        before=parse_date(before) if before else None,
        extensions=tuple(clean_text(e, "ext").strip() for e in (ext or ()) if e.strip()),
        min_width=width,
        min_height=height,
        place=" ".join(place.split()) or None if place else None,
    )


def search_options(
    limit: Annotated[int, Query(ge=1, le=_MAX_K, description="Hits per page.")] = 20,
    offset: Annotated[int, Query(ge=0, le=_MAX_DEPTH, description="Hits to skip (or use cursor).")] = 0,
    cursor: Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page.")] = None,
    target: Annotated[
        Literal["image", "text"], Query(description="Find photos (image) or indexed texts (text).")
    ] = "image",
    under: Annotated[
        str | None, Query(max_length=_MAX_TEXT, description="Only items whose path (absolute) is under this folder.")
    ] = None,
    after: Annotated[
        str | None, Query(max_length=64, description="Only photos taken after this date (EXIF, else mtime).")
    ] = None,
    before: Annotated[str | None, Query(max_length=64, description="Only photos taken before this date.")] = None,
    ext: Annotated[list[str] | None, Query(max_length=16, description="Only these extensions (repeatable).")] = None,
    min_size: Annotated[str | None, Query(max_length=32, description="Only photos at least WIDTHxHEIGHT.")] = None,
    min_score: Annotated[str | None, Query(max_length=32, description="A score, or 'auto'.")] = None,
    place: Annotated[
        str | None,
        Query(max_length=200, description="Only photos taken in this city, region or country (see /api/places)."),
    ] = None,
    diverse: Annotated[float | None, Query(ge=0.0, le=1.0, description="MMR λ: 1 = relevance only.")] = None,
    collapse: Annotated[
        float | None, Query(ge=0.0, le=1.0, description="Drop near-duplicates above this cosine.")
    ] = None,
    rerank: Annotated[bool, Query(description="Second stage on (default) or off.")] = True,
    candidates: Annotated[int, Query(ge=1, le=2000, description="First-stage candidates to re-rank.")] = 100,
) -> SearchOptions:
    if cursor is not None:
        offset = _decode_cursor(cursor)
    if offset + limit > _MAX_DEPTH:
        raise HTTPException(422, f"offset + limit must be at most {_MAX_DEPTH} (got {offset + limit})")
    filters = search_filter(under, after, before, ext, min_size, place=place)
    cutoff: float | Literal["auto"] | None = None
    if min_score is not None and min_score.strip():
        if min_score.strip() == "auto":
            cutoff = "auto"
        else:
            try:
                cutoff = float(min_score)
            except ValueError:
                raise HTTPException(422, f"min_score must be a number or 'auto', not {min_score!r}") from None
            if cutoff != cutoff or abs(cutoff) == float("inf"):
                raise HTTPException(422, "min_score must be a finite number")
    options: RerankOptions | bool = (
        RerankOptions(candidates=candidates, diverse=diverse, duplicate_threshold=collapse) if rerank else False
    )
    return SearchOptions(limit=limit, offset=offset, target=target, filters=filters, rerank=options, min_score=cutoff)


def _on_event_loop(parse: Callable[_P, _T]) -> Callable[_P, Awaitable[_T]]:
    """`parse` as an `async` dependency with the same parameters (so the same query parameters,
    validation and OpenAPI description). FastAPI runs a plain `def` dependency in a worker thread,
    and the hop there and back costs more than the parse itself; an `async` one runs on the event
    loop. Only for quick functions that never block."""

    @functools.wraps(parse)
    async def dependency(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return parse(*args, **kwargs)

    return dependency


# What the routes depend on; search_options itself stays a plain function (the page calls it).
search_options_dependency = _on_event_loop(search_options)

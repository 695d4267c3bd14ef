"""Request and response bodies of the JSON API (they are also the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from xmodal.indexer.limits import DEFAULT_LIMITS

# Lists are bounded in the schema, so pydantic refuses a list that is too long before it validates
# its items (a 5 MB list of numbers is one error, not a million). A server with other limits checks
# its own again in the route.
_MAX_TEXTS = DEFAULT_LIMITS.max_texts_per_request

__all__ = [
    "HitOut",
    "SearchResponse",
    "ItemOut",
    "BatchSearchRequest",
    "BatchResult",
    "BatchSearchResponse",
    "EmbedTextsRequest",
    "EmbedResponse",
    "InfoOut",
    "FailureOut",
    "IndexRequest",
    "IndexStatus",
    "HealthOut",
    "PhotoTextOut",
    "ErrorOut",
]

Kind = Literal["image", "text"]
ItemKind = Literal["image", "text", "video"]  # what a hit or an item is (a video is searched as an image)


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong, and what to do about it.")
    status: int


class HitOut(BaseModel):
    id: int
    kind: ItemKind
    score: float
    path: str = Field(description="The photo's path, or for a text the file it came from.")
    name: str = Field(description="The file name (last part of the path).")
    text: str | None = None
    copies: int = Field(default=0, description="Near-duplicates folded into this hit by collapse.")
    thumbnail: str | None = Field(default=None, description="URL of the thumbnail (images only).")
    url: str | None = Field(default=None, description="URL of the full photo (images only).")
    pair: list[str] = Field(
        default_factory=list, description="The shot's other files folded into this hit (a RAW+JPEG pair's RAW)."
    )
    time: float | None = Field(default=None, description="A video's moment that matched, in seconds.")
    matched: list[str] = Field(
        default_factory=list,
        description='Parts of the query this hit satisfies: "visual", "text_in_photo", "place", "date", "name".',
    )


class SearchResponse(BaseModel):
    hits: list[HitOut]
    offset: int
    limit: int
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page."
    )
    target: Kind
    took_ms: float
    understood: dict[str, object] | None = Field(
        default=None,
        description="What a text query was read as (search.understanding.Understood.as_dict): its visual part, "
        "dates, place, words in the photo, names, words not understood, each Chinese term with the English it "
        "is read as (`read_as`, `reading`), words read by their characters (`guessed`) and a `note` when the "
        "language is not understood yet. A query searched literally, combined with a picture or for texts has "
        "only its language read (`literal` true); null without query text.",
    )
    reading: str | None = Field(
        default=None,
        json_schema_extra={"deprecated": True},
        description="Deprecated: `understood` says the same. How a query not in English was read: 'reading "
        '"海边的狗" as "dog beach"\' (and the words not understood), or a note that its language is not '
        "understood yet; null for English.",
    )


class ItemOut(BaseModel):
    id: int
    kind: ItemKind
    path: str
    name: str
    size: int | None = None
    width: int | None = None
    height: int | None = None
    taken_at: datetime | None = Field(default=None, description="EXIF capture time, when the photo has one.")
    modified: datetime | None = None
    indexed_at: datetime | None = None
    text: str | None = None
    thumbnail: str | None = None
    url: str | None = None
    view: str | None = Field(default=None, description="URL of the photo as browsers show it (a JPEG of a HEIC).")
    texts: list[HitOut] = Field(default_factory=list, description="Indexed texts that match this photo best.")
    facts: FactsOut | None = Field(default=None, description="When, where and with which camera (photos with facts).")


class BatchSearchRequest(BaseModel):
    queries: list[str] = Field(min_length=1, max_length=_MAX_TEXTS, description="Query texts.")
    limit: int = Field(10, ge=1, le=DEFAULT_LIMITS.max_k)
    target: Kind = "image"
    rerank: bool = True
    # the same filters as GET /api/search, applied to every query of the batch
    under: str | None = Field(None, max_length=4096, description="Only items whose path is under this folder.")
    after: str | None = Field(None, max_length=64, description="Only photos taken after this date.")
    before: str | None = Field(None, max_length=64, description="Only photos taken before this date.")
    ext: list[str] | None = Field(None, max_length=16, description="Only these extensions.")
    min_size: str | None = Field(None, max_length=32, description="Only photos at least WIDTHxHEIGHT.")
    place: str | None = Field(None, max_length=200, description="Only photos taken in this city, region or country.")


class BatchResult(BaseModel):
    query: str
    ids: list[int]
    scores: list[float]


class BatchSearchResponse(BaseModel):
    results: list[BatchResult]
    target: Kind
    took_ms: float


class EmbedTextsRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=_MAX_TEXTS)


class EmbedResponse(BaseModel):
    model: str | None
    dim: int
    vectors: list[list[float]] = Field(description="One L2-normalised vector per input, in order.")


class InfoOut(BaseModel):
    index: str
    images: int
    texts: int
    errors: int = Field(description="Files that could not be read (as `xmodal info` counts them).")
    skipped: dict[str, int] = Field(
        default_factory=dict, description="Files of kinds not read (camera RAW, video), by extension."
    )
    model: str | None
    dim: int | None
    size_bytes: int
    roots: list[str]
    read_only: bool
    auth: bool
    reloads: int
    signals: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="What the index holds of each per-item signal (as `xmodal info` shows it): e.g. "
        "photo_text's photos_read, photos_with_text, frames_read, frames_with_text, to_read.",
    )


class FailureOut(BaseModel):
    path: str
    reason: str


class IndexRequest(BaseModel):
    paths: list[str] = Field(
        default_factory=list,
        max_length=_MAX_TEXTS,
        description="Folders or files under the index's folders; none: all of them.",
    )


class IndexStatus(BaseModel):
    state: Literal["idle", "queued", "running", "done", "failed"] = Field(
        description="queued: waiting for another indexing run (the watcher's, another process's) to end"
    )
    paths: list[str] = Field(default_factory=list)
    done: int = 0
    total: int = 0
    summary: dict[str, object] | None = None
    error: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok"]


class TextLineOut(BaseModel):
    text: str
    score: float
    box: list[list[float]] = Field(description="Four [x, y] corners as fractions of the photo's width and height.")
    match: bool = Field(False, description="The line holds a word of in_photo.")


class TextReadingOut(BaseModel):
    frame_time: float | None = Field(None, description="Seconds into a video; null for a photo.")
    status: Literal["text", "none", "failed"]
    reason: str | None = None
    engine: str
    text: str
    lines: list[TextLineOut]


class PhotoTextOut(BaseModel):
    id: int
    readings: list[TextReadingOut] = Field(description="Empty while the photo's text is not read yet.")


class FactsOut(BaseModel):
    """A photo's facts (indexer.facts)."""

    taken_at: datetime | None = Field(description="When it was taken, as the camera's clock showed it.")
    taken_offset: int | None = Field(description="Minutes east of UTC of taken_at, when known.")
    taken_source: str = Field(
        description="Where taken_at came from: exif, exif_digitized, exif_modified, video, metadata or file (mtime)."
    )
    latitude: float | None = None
    longitude: float | None = None
    city: str | None = None
    region: str | None = None
    country: str | None = None
    country_code: str | None = None
    camera: str | None = None
    words: str = Field("", description="The file's and its folders' names as words.")


class PlaceOut(BaseModel):
    name: str
    level: Literal["city", "region", "country"]
    count: int
    within: str | None = Field(None, description="What holds it: a city's region and country, a region's country.")


class PlacesResponse(BaseModel):
    places: list[PlaceOut]


class MonthItemOut(BaseModel):
    id: int
    thumbnail: str


class MonthOut(BaseModel):
    month: str = Field(description="YYYY-MM")
    count: int
    items: list[MonthItemOut] = Field(description="Its newest photos.")


class TimelineResponse(BaseModel):
    months: list[MonthOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next (older) months; null at the end.")
    undated: int = Field(description="Photos without a date (none yet: the next index run fills them).")


ItemOut.model_rebuild()  # its facts are described below it

"""Indexed items by id: metadata, "more like this", the thumbnail and the photo itself.

No route takes a file path: an item is found by its id in the index, and its file is served only
while it is still the file that was indexed (same size and mtime, a regular file), so a photo
swapped for a symlink to something else after indexing is not served.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import datetime
from email.utils import formatdate
from typing import IO, Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from PIL import Image, UnidentifiedImageError
from sqlalchemy import select

from xmodal.cli.server.models import FactsOut, ItemOut, PhotoTextOut, SearchResponse
from xmodal.cli.server.params import SearchOptions, search_options_dependency
from xmodal.cli.server.pictures import reduced_picture
from xmodal.cli.server.routes.search import run_search
from xmodal.cli.server.routes.shaping import hit_out, json_response
from xmodal.cli.server.services import Services, get_services
from xmodal.indexer.facts import Facts
from xmodal.indexer.kinds import HEADER_BYTES, is_camera_raw, kind_of_header
from xmodal.indexer.limits import Limits
from xmodal.indexer.paths import OPEN_NONBLOCK
from xmodal.indexer.store.schema import ImageRow, TextRow
from xmodal.search.engine import SearchEngine

__all__ = ["router"]

router = APIRouter(prefix="/api/items", tags=["items"])
ServicesDep = Annotated[Services, Depends(get_services)]
ItemId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The item's id, as search results give it.")]
_CHUNK = 256 * 1024
_MATCHING_TEXTS = 5


def _photo(engine: SearchEngine, item_id: int) -> ImageRow:
    with engine.store.metadata.session() as s:
        row = s.execute(
            select(
                ImageRow.id,
                ImageRow.path,
                ImageRow.size,
                ImageRow.mtime_ns,
                ImageRow.width,
                ImageRow.height,
                ImageRow.taken_at,
                ImageRow.indexed_at,
                ImageRow.media,
            ).where(ImageRow.id == item_id)
        ).first()
    if row is None:
        raise HTTPException(404, f"no photo with id {item_id} in the index")
    return row  # type: ignore[return-value]


def _open_indexed(row: ImageRow) -> int:
    """A file descriptor of the photo, checked to be the very file that was indexed."""
    gone = HTTPException(
        404, f"the file of photo {row.id} changed or was removed since it was indexed; index its folder again"
    )
    try:
        fd = os.open(row.path, os.O_RDONLY | OPEN_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        raise gone from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != row.size or st.st_mtime_ns != row.mtime_ns:
        os.close(fd)
        raise gone
    return fd


@router.get(
    "/{item_id}", response_model=ItemOut, summary="One item's metadata (and, for a photo, its best-matching texts)"
)
def item(
    services: ServicesDep, item_id: ItemId, kind: Annotated[Literal["image", "text"], Query()] = "image"
) -> ItemOut:
    engine = services.engine
    if kind == "text":
        with engine.store.metadata.session() as s:
            text_row = s.execute(
                select(TextRow.id, TextRow.source, TextRow.text, TextRow.indexed_at).where(TextRow.id == item_id)
            ).first()
        if text_row is None:
            raise HTTPException(404, f"no text with id {item_id} in the index")
        return ItemOut(
            id=text_row.id,
            kind="text",
            path=text_row.source,
            name=os.path.basename(text_row.source),
            text=text_row.text,
            indexed_at=text_row.indexed_at,
        )
    row = _photo(engine, item_id)
    texts = []
    if len(engine.store.vectors("text")):
        with services.searching() as searching:
            texts = [hit_out(h) for h in searching.similar(item_id, k=_MATCHING_TEXTS, kind="image", target="text")]
    return ItemOut(
        id=row.id,
        kind="video" if row.media == "video" else "image",
        path=row.path,
        name=os.path.basename(row.path),
        size=row.size,
        width=row.width,
        height=row.height,
        taken_at=row.taken_at,
        modified=datetime.fromtimestamp(row.mtime_ns / 1e9),
        indexed_at=row.indexed_at,
        thumbnail=f"/api/items/{row.id}/thumbnail",
        url=f"/api/items/{row.id}/file",
        view=f"/api/items/{row.id}/view",
        texts=texts,
        facts=_facts_out(engine.facts(row.id)),
    )


def _facts_out(facts: Facts | None) -> FactsOut | None:
    if facts is None:
        return None
    return FactsOut(
        taken_at=facts.taken_at,
        taken_offset=facts.taken_offset,
        taken_source=facts.taken_source,
        latitude=facts.latitude,
        longitude=facts.longitude,
        city=facts.city,
        region=facts.region,
        country=facts.country,
        country_code=facts.country_code,
        camera=facts.camera,
        words=facts.words,
    )


@router.get("/{item_id}/similar", response_model=SearchResponse, summary="More like this: never the item itself")
def similar(
    services: ServicesDep, item_id: ItemId, options: Annotated[SearchOptions, Depends(search_options_dependency)]
) -> Response:
    return json_response(run_search(services, options, None, item_id, None))


@router.get(
    "/{item_id}/text",
    response_model=PhotoTextOut,
    summary="The text read in a photo, its lines and boxes; which match in_photo",
)
def photo_text(
    services: ServicesDep,
    item_id: ItemId,
    in_photo: Annotated[str | None, Query(max_length=4096, description="Mark the lines holding these words.")] = None,
) -> Response:
    """{"id", "readings": [{"frame_time", "status", "reason", "text", "lines": [{"text", "score", "box",
    "match"}]}]}: box corners as fractions of the photo's width and height."""
    from xmodal.search.photo_text import line_matches

    with services.searching() as engine:
        _photo(engine, item_id)  # 404 for an unknown id
        readings = engine.photo_text(item_id)
    for reading in readings:
        lines: list[dict[str, object]] = reading["lines"]  # type: ignore[assignment]
        for line, mark in zip(lines, line_matches([str(line["text"]) for line in lines], in_photo or "")):
            line["match"] = mark
    return json_response(PhotoTextOut.model_validate({"id": item_id, "readings": readings}))


# Formats every current browser shows; any other photo (HEIC, TIFF, camera RAW) is shown as a JPEG rendition.
_BROWSER_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/avif"})
_DISPLAY_SIZE = 2048  # the short side of a display rendition (a screen's worth)


def _render(handle: IO[bytes], field: str, limits: Limits, edge: int, thumbnail: bool) -> Image.Image:
    picture = reduced_picture(handle, field, limits, edge)
    if thumbnail:
        picture.thumbnail((edge, edge))  # fits the box: receipts and panoramas stay whole
    elif min(picture.size) > edge:  # a display copy: its short side `edge`
        scale = edge / min(picture.size)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return picture


def _rendition(services: Services, row: ImageRow, request: Request, edge: int, thumbnail: bool) -> Response:
    """A cached JPEG of the photo: a thumbnail (longer side `edge`, aspect ratio kept) or a display
    copy (short side at most `edge`). Decoded in the decoding threads, like uploads."""
    cache = services.thumbnails
    key = cache.key(row.path, row.size, row.mtime_ns, edge)
    etag = f'"{key}"'
    headers = {"Cache-Control": "private, max-age=3600", "ETag": etag}
    fd = _open_indexed(row)
    if request.headers.get("if-none-match") == etag:
        os.close(fd)
        return Response(status_code=304, headers=headers)
    with os.fdopen(fd, "rb") as handle:
        path = cache.lookup(key)
        if path is None:
            limits = services.settings.limits
            path = cache.store(key, services.decoder.run(_render, handle, f"photo {row.id}", limits, edge, thumbnail))
    return FileResponse(path, media_type="image/jpeg", headers=headers)


@router.get(
    "/{item_id}/thumbnail",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "No such photo, or its file changed"}},
    summary="A JPEG thumbnail (whole picture, aspect ratio kept, EXIF orientation applied, cached on disk)",
)
def thumbnail(
    services: ServicesDep,
    item_id: ItemId,
    request: Request,
    t: Annotated[float | None, Query(ge=0, le=10**7, description="A video's moment, in seconds.")] = None,
) -> Response:
    row = _photo(services.engine, item_id)
    if row.media == "video":
        return _video_thumbnail(services, row, request, t or 0.0)
    return _rendition(services, row, request, services.thumbnails.size, thumbnail=True)


_RAW_TYPE = "application/octet-stream"  # a camera RAW: a download; /view shows a JPEG of it


def _frame_picture(path: str, seconds: float, limits: Limits, edge: int) -> Image.Image:
    from xmodal.indexer.errors import ImageReadError
    from xmodal.indexer.videos import frame_at

    try:
        picture = frame_at(path, seconds, edge, limits)
    except ImageReadError as e:
        raise HTTPException(404, f"no frame at {seconds:g} s: {e}") from None
    except ImportError:
        raise HTTPException(404, "videos need the video extra: pip install 'xmodal[video]'") from None
    picture.thumbnail((edge, edge))
    return picture


def _video_thumbnail(services: Services, row: ImageRow, request: Request, seconds: float) -> Response:
    """A cached JPEG of the video's frame at (the keyframe before) `seconds`."""
    cache = services.thumbnails
    seconds = round(seconds, 1)
    key = cache.key(f"{row.path}@{seconds}", row.size, row.mtime_ns)
    etag = f'"{key}"'
    headers = {"Cache-Control": "private, max-age=3600", "ETag": etag}
    os.close(_open_indexed(row))  # the very file that was indexed (404 otherwise)
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    path = cache.lookup(key)
    if path is None:
        limits = services.settings.limits
        path = cache.store(key, services.decoder.run(_frame_picture, row.path, seconds, limits, cache.size))
    return FileResponse(path, media_type="image/jpeg", headers=headers)


def _open_typed(row: ImageRow, item_id: int) -> tuple[IO[bytes], str]:
    """The very file that was indexed, open, and its media type by content (closed again on failure)."""
    handle = os.fdopen(_open_indexed(row), "rb")
    try:
        return handle, _media_type(handle, item_id)
    except BaseException:
        handle.close()
        raise


def _media_type(handle: IO[bytes], item_id: int) -> str:
    if is_camera_raw(handle):
        return _RAW_TYPE
    try:
        with Image.open(handle) as im:  # the type comes from the content, never from the file name
            return Image.MIME.get(im.format or "", "application/octet-stream")
    except UnidentifiedImageError:
        handle.seek(0)
        head = handle.read(HEADER_BYTES)
        if kind_of_header(head) == "heif":  # read by pillow-heif, unknown to Pillow
            return "image/heif"
        if kind_of_header(head) == "video":
            return _video_type(head)
        raise HTTPException(404, f"photo {item_id} is no longer a readable image") from None
    except Exception:  # noqa: BLE001 - indexed once, unreadable now
        raise HTTPException(404, f"photo {item_id} is no longer a readable image") from None


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range (first, last; inclusive) a `Range` header asks of a file of `size` bytes;
    None to send the whole file: no header, another unit, a malformed or multi-part request (RFC 9110
    lets a server ignore those; browsers seeking in a video ask one range). Raises 416 with
    `Content-Range: bytes */size` when the range starts past the end."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = (part.strip() for part in spec.strip().partition("-"))
    if not dash or not (first_text or last_text) or not all(t.isdigit() for t in (first_text, last_text) if t):
        return None
    if not first_text:  # a suffix: the last N bytes
        first, last = max(0, size - int(last_text)), size - 1
        if int(last_text) == 0:
            first = size
    else:
        first = int(first_text)
        last = min(int(last_text), size - 1) if last_text else size - 1
        if last_text and int(last_text) < first:
            return None  # malformed (last before first): ignored
    if first >= size:
        raise HTTPException(
            416, f"the range starts past the end of the file ({size} bytes)", {"Content-Range": f"bytes */{size}"}
        )
    return first, last


def _video_type(head: bytes) -> str:
    """A video's media type by its first bytes (browsers play MP4 and WebM; the rest download)."""
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head[:4] == b"RIFF":
        return "video/x-msvideo"
    return "application/octet-stream"


def _stream(handle: IO[bytes], row: ImageRow, media_type: str, request: Request | None = None) -> Response:
    """The file itself; one byte range of it (206) when the request asks for one (seeking in a video)."""
    name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in os.path.basename(row.path))
    etag = f'"{row.size:x}-{row.mtime_ns:x}"'
    headers = {
        "Content-Disposition": f'inline; filename="{name}"',
        "Cache-Control": "private, max-age=3600",
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": formatdate(row.mtime_ns / 1e9, usegmt=True),
    }
    wanted = None
    if request is not None:
        if_range = request.headers.get("if-range")
        if if_range is None or if_range in (etag, headers["Last-Modified"]):  # else: changed, send it whole
            try:
                wanted = byte_range(request.headers.get("range"), row.size)
            except HTTPException:
                handle.close()
                raise
    first, last = wanted if wanted is not None else (0, row.size - 1)
    handle.seek(first)

    def chunks() -> Iterator[bytes]:
        left = last - first + 1
        with handle:
            while left > 0 and (block := handle.read(min(_CHUNK, left))):
                left -= len(block)
                yield block

    headers["Content-Length"] = str(last - first + 1)
    if wanted is None:
        return StreamingResponse(chunks(), media_type=media_type, headers=headers)
    headers["Content-Range"] = f"bytes {first}-{last}/{row.size}"
    return StreamingResponse(chunks(), status_code=206, media_type=media_type, headers=headers)


@router.get(
    "/{item_id}/file",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"image/*": {}}},
        206: {"description": "One byte range of the file (a `Range` request)"},
        404: {"description": "No such photo, or its file changed"},
        416: {"description": "The range starts past the end of the file"},
    },
    summary="The photo itself; one byte range of it (206) for a `Range` request, 416 past its end",
)
def original(services: ServicesDep, item_id: ItemId, request: Request) -> Response:
    row = _photo(services.engine, item_id)
    handle, media_type = _open_typed(row, item_id)
    return _stream(handle, row, media_type, request)


@router.get(
    "/{item_id}/view",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/*": {}}}, 404: {"description": "No such photo, or its file changed"}},
    summary="The photo as a browser can show it: the file itself, or a JPEG of a HEIC, TIFF or camera RAW",
)
def view(services: ServicesDep, item_id: ItemId, request: Request) -> Response:
    row = _photo(services.engine, item_id)
    handle, media_type = _open_typed(row, item_id)
    if media_type in _BROWSER_TYPES or media_type.startswith("video/"):
        return _stream(handle, row, media_type, request)
    handle.close()
    return _rendition(services, row, request, _DISPLAY_SIZE, thumbnail=False)

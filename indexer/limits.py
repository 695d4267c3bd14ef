"""Every bound xmodal puts on work done for one file, one query or one request, in one place.

The library takes a `Limits` (default: `DEFAULT_LIMITS`); the CLI, the server and the MCP tool build
theirs from the same dataclass, so a limit means the same thing wherever a query or a file comes in.
Nothing here changes process-wide state (Pillow's own pixel limit is left alone: decoders check
`max_pixels` from the header themselves).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "DEFAULT_LIMITS"]


@dataclass(frozen=True)
class Limits:
    """Bounds on decoding, queries and requests. Sizes in bytes, times in seconds."""

    # Decoding a file (indexing, thumbnails, uploads). 120 MP admits every real camera photo.
    max_pixels: int = 120_000_000
    decode_seconds: float = 60.0  # per file: a decoder that stalls longer fails that file only
    # A camera RAW is read whole into memory (LibRaw decodes from a buffer): 100-150 MP medium-format
    # RAWs are 100-300 MB, a 24-45 MP camera's 20-90 MB.
    max_raw_bytes: int = 400 * 1024 * 1024
    # Videos (indexer.videos): frames are sampled at keyframes and scene changes, at most one every
    # video_frame_seconds, one at least every video_still_seconds, at most video_max_frames a video
    # (a longer video spreads them out); decoding one video stops after video_decode_seconds and
    # keeps the frames it has (a stalled or very slow decoder indexes what it reached).
    video_frame_seconds: float = 2.0
    video_still_seconds: float = 10.0
    video_max_frames: int = 120
    video_decode_seconds: float = 120.0
    # A decoder stuck inside one call never reaches the sampler's own time check: its process is
    # killed this long after video_decode_seconds has run out (the frames it sent are kept).
    video_stall_seconds: float = 30.0
    # Indexing. A run that finds more than this share of the index's photos missing removes none of
    # them (a drive half gone looks like that); an explicit prune or `xmodal remove` still does.
    max_missing_share: float = 0.5
    # Queries.
    max_query_chars: int = 4096  # characters in one query text
    max_query_tokens: int = 256  # tokens the text towers read of one text (the rest is cut)
    max_k: int = 500  # hits in one page (CLI -n, HTTP limit, MCP k)
    max_depth: int = 5000  # offset + limit: deeper pages are refused
    # Requests (HTTP and MCP).
    max_upload_bytes: int = 25 * 1024 * 1024  # one request body with pictures
    max_json_bytes: int = 2 * 1024 * 1024  # one JSON request body
    max_images_per_request: int = 32
    max_texts_per_request: int = 256  # texts or queries in one batch request
    max_chars_per_request: int = 256 * 1024  # characters of all texts in one batch request together
    texts_per_model_call: int = 32  # a batch request's texts go to the model this many at a time (memory)
    max_pixels_per_request: int = 200_000_000  # decoded pixels of all pictures in one request together
    concurrent_decodes: int = 2  # pictures decoded at once by one server (uploads and thumbnails)
    max_error_items: int = 20  # validation errors listed in one error body
    # The server's login form (with --token): guesses per client address, and web sessions kept.
    max_failed_logins: int = 5  # per client address within failed_login_window; then 429
    failed_login_window: float = 60.0
    max_sessions: int = 256  # signed-in browsers remembered; the oldest is signed out beyond it
    # The server's thumbnail cache on disk, least recently used dropped first.
    thumbnail_cache_bytes: int = 512 * 1024 * 1024
    # The index database. Held by another process (an upgrade, a long write) longer than this,
    # it is reported busy (IndexLockedError), never missing.
    database_busy_seconds: float = 30.0
    # Reading text in photos (indexer.photo_text): the picture is decoded to at most this many pixels
    # (recognition crops come from it), one photo's reading stops after ocr_seconds (what was read
    # by then is kept, and the reason recorded), and at most ocr_max_boxes text regions are read.
    ocr_max_pixels: int = 16_000_000
    ocr_seconds: float = 20.0
    ocr_max_boxes: int = 300
    # Searching text in photos: the database's index hands at most this many candidate texts to
    # the exact scoring of one query (search.photo_text).
    ocr_max_candidates: int = 5000


DEFAULT_LIMITS = Limits()

"""Reading videos: the frames that represent a video, each with its time, and one frame at a time.

A video is sampled at its keyframes (the decoder skips every other frame: `skip_frame="NONKEY"`,
far cheaper than decoding them all) and kept where the picture changes (a scene change) or has
not been sampled for a while: at most one frame every `Limits.video_frame_seconds`, at least one
every `Limits.video_still_seconds`, at most `Limits.video_max_frames` a video. A video longer than
the cap allows is sampled evenly instead, one seek per frame, so an hour costs what 120 frames
cost. A short clip gets its first frame at least. Frames are scaled down as they are converted
(the model reads ~224 pixels); a stream larger than `Limits.max_pixels` is refused before any
frame is decoded; decoding stops after `Limits.video_decode_seconds` and keeps what it has.

PyAV (FFmpeg) comes with the `video` extra; without it `video_support()` says why videos are not
read. Nothing here prints or changes process-wide state (FFmpeg's log level is left alone).
"""

from __future__ import annotations

import math
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from xmodal.indexer.errors import ImageReadError
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    import av.container

__all__ = [
    "VIDEO_EXTRA_REASON",
    "SampledVideo",
    "video_support",
    "sample_frames",
    "frame_at",
    "typical_frame",
]

VIDEO_EXTRA_REASON = "videos need the video extra: pip install 'xmodal[video]'"
_OPEN_TIMEOUT_S = 10.0  # a read that brings no data this long (a stalled network share) fails
# A kept frame's picture differs from the last kept one by this much (mean absolute difference of
# 16x16 greyscale, 0-255): a scene change.
_SCENE_CHANGE = 18.0


@dataclass(frozen=True)
class SampledVideo:
    """The frames sampled from one video (RGB, shorter side about `size`), their times in seconds,
    and facts about the video. `complete` is False when decoding stopped early (time budget, a
    truncated or damaged file): the frames are those before that point."""

    frames: list[Image.Image]
    times: list[float]
    width: int
    height: int
    duration: float | None
    taken_at: datetime | None
    complete: bool = True


def video_support() -> str | None:
    """None when videos can be read here, else the reason they cannot (the extra is missing)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return VIDEO_EXTRA_REASON
    return None


def _open(path: Path | str) -> av.container.InputContainer:
    import av

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageReadError("no such file") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError("not a regular file (FIFO, socket or device)")
    if st.st_size == 0:
        raise ImageReadError("empty file (0 bytes)")
    try:
        return av.open(str(path), timeout=_OPEN_TIMEOUT_S, metadata_errors="replace")
    except av.FFmpegError as e:
        raise ImageReadError(f"not a video the decoder reads: {_reason(e)}") from None


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(error).__name__


def _creation_time(container: av.container.InputContainer) -> datetime | None:
    """The container's creation time (QuickTime/MP4 `creation_time`, Matroska `DATE_*`), as naive UTC."""
    metadata = dict(container.metadata)
    for stream in container.streams.video[:1]:
        metadata = {**dict(stream.metadata), **metadata}
    for key in ("creation_time", "com.apple.quicktime.creationdate", "DATE_RECORDED", "DATE_ENCODED"):
        raw = metadata.get(key)
        if not raw:
            continue
        try:
            value = datetime.fromisoformat(str(raw).strip().replace("Z", "+00:00"))
        except ValueError:
            continue
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        if value.year > 1970:  # 1904/1970: an encoder's zero, not a date
            return value
    return None


def _scaled(frame: object, size: int) -> Image.Image:
    """The frame as RGB with its shorter side `size` (never enlarged), scaled while converting."""
    width, height = frame.width, frame.height  # type: ignore[attr-defined]
    scale = min(1.0, size / max(1, min(width, height)))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    # One scaling thread: swscale's slice threads left in a reformatter of this process would hang
    # a child forked from it (their condition variables are destroyed in the child, pthread_cond_destroy
    # waits for threads that do not exist there); frames here are small, one thread is enough.
    scaled = frame.reformat(width=w, height=h, format="rgb24", threads=1)  # type: ignore[attr-defined]
    return scaled.to_image()


def _signature(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32)


def _time_of(frame: object, stream: object) -> float | None:
    t = getattr(frame, "time", None)
    if t is not None:
        return float(t) if math.isfinite(t) else None
    pts, base = getattr(frame, "pts", None), getattr(stream, "time_base", None)
    return float(pts * base) if pts is not None and base is not None else None


def sample_frames(
    path: Path | str,
    size: int = 224,
    limits: Limits = DEFAULT_LIMITS,
    on_frame: Callable[[Image.Image, float], None] | None = None,
) -> SampledVideo:
    """The frames that represent the video at `path` (see the module's docstring). `on_frame` is
    called with each frame and its time as soon as it is kept (to embed frames while later ones
    are still being decoded).

    ImageReadError with the reason when no frame can be had: not a video, no video stream (audio
    only), a stream the decoder rejects, too many pixels, an empty file."""
    import av

    started = time.monotonic()
    with _open(path) as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            raise ImageReadError(f"no video stream (holds {', '.join(kinds) or 'no streams'})")
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width * height > limits.max_pixels:
            raise ImageReadError(f"{width}x{height} video frames exceed the {limits.max_pixels:,}-pixel limit")
        duration = None
        if container.duration:
            duration = container.duration / 1_000_000
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        taken_at = _creation_time(container)
        frames: list[Image.Image] = []
        times: list[float] = []

        def keep(image: Image.Image, t: float) -> None:
            frames.append(image)
            times.append(t)
            if on_frame is not None:
                on_frame(image, t)

        complete = True
        interval = limits.video_frame_seconds
        seek = bool(duration and duration / max(1, limits.video_max_frames) > interval)
        if seek and duration:
            interval = duration / limits.video_max_frames  # the cap spreads the frames over the video
        deadline = started + limits.video_decode_seconds
        error: str | None = None
        try:
            if seek and duration:
                complete = _sample_by_seeking(container, stream, size, interval, duration, deadline, times, keep)
            else:
                complete = _sample_keyframes(container, stream, size, interval, limits, deadline, frames, times, keep)
        except (av.FFmpegError, ValueError, OSError, MemoryError) as e:
            complete, error = False, _reason(e)
        if not frames:  # no keyframe flagged (intra refresh) or a damaged start: the first frame that decodes
            try:
                container.seek(0)
                stream.codec_context.skip_frame = "DEFAULT"
                for frame in container.decode(stream):
                    keep(_scaled(frame, size), max(0.0, _time_of(frame, stream) or 0.0))
                    break
            except (av.FFmpegError, ValueError, OSError, MemoryError) as e:
                error = error or _reason(e)
        if not frames:
            codec = stream.codec_context.name
            raise ImageReadError(f"the decoder rejects the video stream ({codec}): {error or 'no frame decoded'}")
    return SampledVideo(frames, times, width, height, duration, taken_at, complete)


def _sample_keyframes(
    container: av.container.InputContainer,
    stream: object,
    size: int,
    interval: float,
    limits: Limits,
    deadline: float,
    frames: list[Image.Image],
    times: list[float],
    keep: Callable[[Image.Image, float], None],
) -> bool:
    """Keyframes in order, one looked at every `interval` seconds (only their packets reach the
    decoder), kept on a scene change or after `video_still_seconds`; False when cut short."""
    codec = stream.codec_context  # type: ignore[attr-defined]
    codec.skip_frame = "NONKEY"
    codec.options = {"skip_loop_filter": "all"}  # no deblocking: invisible at the model's ~224 pixels
    base = stream.time_base  # type: ignore[attr-defined]
    last_signature: np.ndarray | None = None
    next_look = 0.0

    sent: deque[float] = deque()  # times of the keyframes handed to the decoder, in order

    def consider(frame: object) -> bool:
        """Keep the frame or not; False once the cap is reached. Only keyframes go in, so frames come
        out in the order they went in (a decoder that reorders holds a few back: their times as sent)."""
        nonlocal last_signature
        t = max(0.0, sent.popleft()) if sent else _time_of(frame, stream)
        if t is None:
            return True
        if times and t - times[-1] < interval:
            return True
        image = _scaled(frame, size)
        signature = _signature(image)
        changed = last_signature is None or float(np.abs(signature - last_signature).mean()) > _SCENE_CHANGE
        if changed or t - times[-1] >= limits.video_still_seconds:
            keep(image, t)
            last_signature = signature
        return len(frames) < limits.video_max_frames

    for packet in container.demux(stream):  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            return False
        if packet.pts is None or not packet.is_keyframe or base is None:
            continue
        t = float(packet.pts * base)
        if t < next_look:
            continue
        next_look = t + interval
        sent.append(t)
        for frame in packet.decode():
            if not consider(frame):
                return True
    for frame in stream.decode(None):  # type: ignore[attr-defined]  # frames a threaded decoder still holds
        if not consider(frame):
            break
    return True


def _sample_by_seeking(
    container: av.container.InputContainer,
    stream: object,
    size: int,
    interval: float,
    duration: float,
    deadline: float,
    times: list[float],
    keep: Callable[[Image.Image, float], None],
) -> bool:
    """One frame every `interval` seconds of a long video: a seek to the keyframe before each time."""
    stream.codec_context.skip_frame = "NONKEY"  # type: ignore[attr-defined]
    base = stream.time_base  # type: ignore[attr-defined]
    wanted = 0.0
    while wanted < duration:
        if time.monotonic() > deadline:
            return False
        container.seek(int(wanted / base), stream=stream, backward=True, any_frame=False)  # type: ignore[arg-type]
        for frame in container.decode(stream):  # type: ignore[arg-type]
            t = _time_of(frame, stream)
            if t is None:
                continue
            if not times or t - times[-1] >= interval / 2:
                keep(_scaled(frame, size), max(0.0, t))
            break
        wanted += interval
    return True


def frame_at(path: Path | str, seconds: float, size: int, limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """The video's frame at (the keyframe at or before) `seconds`, shorter side at most `size`
    (thumbnails of a moment). ImageReadError when the video cannot be read."""
    import av

    with _open(path) as container:
        if not container.streams.video:
            raise ImageReadError("no video stream")
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width * height > limits.max_pixels:
            raise ImageReadError(f"{width}x{height} video frames exceed the {limits.max_pixels:,}-pixel limit")
        stream.codec_context.skip_frame = "NONKEY"
        try:
            if seconds > 0 and stream.time_base:
                container.seek(int(seconds / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                return _scaled(frame, size)
        except (av.FFmpegError, ValueError, OSError) as e:
            raise ImageReadError(f"the decoder rejects the video stream: {_reason(e)}") from None
    raise ImageReadError("no frame decoded")


def typical_frame(vectors: np.ndarray) -> int:
    """The position of the frame most like the others (closest to their mean): the video's own vector."""
    if len(vectors) <= 2:
        return 0
    return int(np.argmax(vectors @ vectors.mean(axis=0)))

"""Videos made at run time with PyAV (H.264 and HEVC), from pictures the test gives."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["write_video", "write_audio_only", "write_undecodable", "FLICKR_IMAGES"]

FLICKR_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "flickr8k-1k" / "images"


def write_video(
    path: Path,
    pictures: Sequence[Image.Image],
    seconds_each: float = 3.0,
    fps: int = 10,
    codec: str = "libx264",
    size: tuple[int, int] = (320, 240),
    gop: int | None = None,
    creation_time: str | None = None,
) -> Path:
    """A clip showing each picture for `seconds_each` seconds, a keyframe every `gop` frames
    (default: every second)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        if creation_time:
            container.metadata["creation_time"] = creation_time
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop or fps
        if codec == "libx265":
            stream.options = {"x265-params": "log-level=none"}
        else:
            stream.options = {"preset": "ultrafast"}
        frames_each = max(1, round(seconds_each * fps))
        for picture in pictures:
            frame = av.VideoFrame.from_image(picture.convert("RGB").resize(size))
            for _ in range(frames_each):
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 2.0) -> Path:
    """An MP4 holding one AAC audio stream and no video."""
    import av

    rate = 44100
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = int(rate * seconds)
        tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / rate)).astype(np.float32)[None, :]
        for start in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.time_base = Fraction(1, rate)
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_undecodable(path: Path, packets: int = 30) -> Path:
    """A well-formed Matroska file whose H.264 stream is noise: the container opens, the decoder
    rejects every packet."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        for i in range(packets):
            packet = av.Packet(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
            packet.stream = stream
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 10)
            packet.is_keyframe = True
            container.mux(packet)
    return path

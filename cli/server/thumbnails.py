"""Thumbnails made on first request and kept on disk, keyed by the photo's path, size and mtime.

Made on request rather than while indexing: most photos of a large library are never looked at,
and an index run should spend its time on embeddings (benchmarks/RESULTS.md has the timings).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from xmodal.indexer.images import decode_image

__all__ = ["ThumbnailCache"]


class ThumbnailCache:
    """JPEG thumbnails whose longer side is at most `size`, EXIF orientation applied."""

    def __init__(self, folder: Path, size: int = 320, quality: int = 82) -> None:
        self.folder = folder
        self.size = size
        self.quality = quality

    def key(self, path: str, file_size: int, mtime_ns: int) -> str:
        raw = f"{path}\0{file_size}\0{mtime_ns}\0{self.size}\0{self.quality}".encode("utf-8", "surrogateescape")
        return hashlib.blake2b(raw, digest_size=16).hexdigest()

    def get(self, path: str, file_size: int, mtime_ns: int) -> Path:
        """The cached thumbnail's file, made first when missing. Raises ImageReadError."""
        key = self.key(path, file_size, mtime_ns)
        target = self.folder / key[:2] / f"{key}.jpg"
        if target.is_file():
            return target
        decoded = decode_image(Path(path), target_size=self.size)  # draft-mode decode, EXIF-oriented
        image = decoded.image
        image.thumbnail((self.size, self.size))
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a reader never sees half a file, two writers never clash.
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                image.save(out, format="JPEG", quality=self.quality, optimize=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

"""JPEG renditions of indexed photos, made on first request and kept on disk: thumbnails for the
grid and display copies of photos browsers cannot show (HEIC, TIFF).

Made on request rather than while indexing: most photos of a large library are never looked at,
and an index run should spend its time on embeddings (benchmarks/RESULTS.md has the timings).

The cache is bounded by its total size (`Limits.thumbnail_cache_bytes`): the least recently used
files go first. A file is named `<slot>-<version>.jpg`: the slot says which photo (path) and which
rendition, the version which state of the file (size, mtime). When a photo changed and is shown
again, its new rendition replaces the old one at once, so stale files never wait for eviction.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

__all__ = ["ThumbnailCache", "rendition_key"]


def _hash(*parts: object, size: int) -> str:
    raw = "\0".join(str(p) for p in parts).encode("utf-8", "surrogateescape")
    return hashlib.blake2b(raw, digest_size=size).hexdigest()


def rendition_key(path: str, file_size: int, mtime_ns: int, edge: int, quality: int) -> str:
    """`<slot>-<version>`: slot from the photo's path and the rendition, version from the file's state."""
    return f"{_hash(path, edge, quality, size=12)}-{_hash(file_size, mtime_ns, size=8)}"


class ThumbnailCache:
    """Renditions on disk under `folder`, at most `max_bytes` in all (least recently used dropped).
    Thread-safe; several server processes may share a folder (each bounds what it sees)."""

    def __init__(self, folder: Path, max_bytes: int, size: int = 320, quality: int = 82) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.size = size
        self.quality = quality
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, int] | None = None  # file name -> bytes, least recent first
        self._slots: dict[str, str] = {}  # slot -> the file name holding it
        self.total = 0

    def key(self, path: str, file_size: int, mtime_ns: int, edge: int | None = None) -> str:
        return rendition_key(path, file_size, mtime_ns, edge or self.size, self.quality)

    def _file(self, name: str) -> Path:
        return self.folder / name[:2] / name

    def _load(self) -> OrderedDict[str, int]:
        """What is on disk, oldest first (a hit touches its file, so mtime is the last use)."""
        if self._entries is None:
            found: list[tuple[float, str, int]] = []
            if self.folder.is_dir():
                for shard in os.scandir(self.folder):
                    if not shard.is_dir(follow_symlinks=False):
                        continue
                    for entry in os.scandir(shard.path):
                        if entry.name.endswith(".jpg") and entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            found.append((st.st_mtime, entry.name, st.st_size))
            found.sort()
            self._entries = OrderedDict((name, size) for _, name, size in found)
            self.total = sum(size for _, _, size in found)
            for _, name, _ in found:
                self._slots[name.split("-", 1)[0]] = name
            self._evict()
        return self._entries

    def lookup(self, key: str) -> Path | None:
        """The cached file for key, marked as just used; None when it was not made yet."""
        name = f"{key}.jpg"
        target = self._file(name)
        with self._lock:
            entries = self._load()
            if name not in entries:
                return None
            entries.move_to_end(name)
        try:
            os.utime(target)  # the order survives a restart
        except OSError:  # removed meanwhile (another process evicted it): make it again
            with self._lock:
                self._forget(name)
            return None
        return target

    def store(self, key: str, image: Image.Image) -> Path:
        """Save image as key's JPEG; older versions of the same slot and the least recently used
        files beyond the size bound are removed."""
        name = f"{key}.jpg"
        target = self._file(name)
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
        size = target.stat().st_size
        slot = key.split("-", 1)[0]
        with self._lock:
            entries = self._load()
            stale = self._slots.get(slot)
            if stale is not None and stale != name:
                self._remove(stale)
            if name in entries:
                self.total -= entries[name]
            entries[name] = size
            entries.move_to_end(name)
            self._slots[slot] = name
            self.total += size
            self._evict(keep=name)
        return target

    def _evict(self, keep: str | None = None) -> None:
        entries = self._entries
        assert entries is not None
        while self.total > self.max_bytes and entries:
            oldest = next(iter(entries))
            if oldest == keep:
                break  # one rendition larger than the whole bound is still served once
            self._remove(oldest)

    def _remove(self, name: str) -> None:
        self._forget(name)
        self._file(name).unlink(missing_ok=True)

    def _forget(self, name: str) -> None:
        entries = self._entries
        if entries is not None and name in entries:
            self.total -= entries.pop(name)
        slot = name.split("-", 1)[0]
        if self._slots.get(slot) == name:
            del self._slots[slot]

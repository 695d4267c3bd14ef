"""Finding the photos under the paths a user gives: recursive, hidden folders skipped, each file once.

A file's kind comes from its content where its name does not settle it (indexer.kinds): picture
extensions go to the decoder (Pillow tells formats by content), plain non-media names are never
opened, and the rest (RAW and video extensions, odd or no extension) are sniffed by their first bytes.
Camera RAWs are found (LibRaw reads them, indexer.raw); a file with a RAW extension whose first bytes
say nothing goes to LibRaw too, which knows formats without a magic (and reports what it cannot read).
Videos are found like photos (`FoundFile.media` "video"); the run decides whether it reads them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xmodal.indexer.images import IMAGE_EXTENSIONS
from xmodal.indexer.kinds import (
    NOT_MEDIA_EXTENSIONS,
    RAW_EXTENSIONS,
    UNREAD_PREFIX,  # re-exported: stats and older callers read it from here
    sniff,
    unread_reason,
)

__all__ = [
    "FoundFile",
    "SkippedFile",
    "RAW_EXTENSIONS",
    "UNREAD_KINDS",
    "UNREAD_PREFIX",
    "scan_paths",
    "unread_extension",
    "video_not_read",
    "media_of",
]

# Files people keep beside their photos that the indexer does not read. They are reported as skipped,
# by extension, so a user learns why part of a shoot is missing.
_VIDEO = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".3gp", ".mts", ".m2ts", ".wmv", ".webm", ".mpg", ".mpeg", ".flv")
UNREAD_KINDS: dict[str, str] = {e: "video" for e in _VIDEO}
_KIND_LABELS = {"video": "video"}


@dataclass(frozen=True)
class FoundFile:
    """A regular image or video file, with the stat facts used to skip unchanged files."""

    path: Path
    size: int
    mtime_ns: int
    media: Literal["photo", "video"] = "photo"  # a video's frames are sampled (indexer.videos)


@dataclass(frozen=True)
class SkippedFile:
    """A path that looked like an image but could not be taken (broken link, FIFO, no access)."""

    path: Path
    reason: str
    unread: str | None = None  # the extension, for a file of a kind xmodal does not read (not a failure)


def unread_extension(reason: str, path: str) -> str | None:
    """The extension of a recorded skip of an unread kind, None for a real failure."""
    return os.path.splitext(path)[1].lower() if reason.startswith(UNREAD_PREFIX) else None


def _unread(path: Path, label: str) -> SkippedFile:
    extension = path.suffix.lower()
    return SkippedFile(path, unread_reason(label, extension), extension or "(none)")


def media_of(path: Path) -> Literal["photo", "video"]:
    """Whether a file found by other means than the scan (a listing) is a video, as the scan decides:
    by its first bytes, or by its name when they say nothing; picture names are never opened."""
    extension = path.suffix.lower()
    if extension in IMAGE_EXTENSIONS or extension in NOT_MEDIA_EXTENSIONS:
        return "photo"
    kind = sniff(path)
    return "video" if kind == "video" or (kind is None and UNREAD_KINDS.get(extension) == "video") else "photo"


def video_not_read(found: FoundFile) -> SkippedFile:
    """A video left out of a run that does not read videos (`xmodal index --no-video`)."""
    extension = found.path.suffix.lower()
    return SkippedFile(
        found.path,
        f"{UNREAD_PREFIX}video ({extension or 'no extension'}); skipped by --no-video",
        extension or "(none)",
    )


def _by_content(path: Path, seen_files: set[tuple[int, int]]) -> FoundFile | SkippedFile | None:
    """A file whose name does not settle its kind (RAW or video extension, odd or none): its first
    bytes do. Pictures are found, RAW and video reported as not read, anything else left alone."""
    extension = path.suffix.lower()
    found = _inspect(path, seen_files)
    if not isinstance(found, FoundFile):
        return found if extension in UNREAD_KINDS or extension in RAW_EXTENSIONS else None
    kind = sniff(path)
    if kind in ("picture", "heif", "raw"):
        return found  # a TIFF-based RAW (NEF, DNG, ARW) is told from a TIFF when decoded
    if kind == "video" or (kind is None and UNREAD_KINDS.get(extension) == "video"):
        # by content, or by name when the content says nothing (empty, damaged): the decoder decides
        return FoundFile(found.path, found.size, found.mtime_ns, "video")
    if kind in _KIND_LABELS:
        return _unread(path, _KIND_LABELS[kind])
    if extension in RAW_EXTENSIONS:  # no magic LibRaw needs: it decides, and says why when it cannot
        return found
    if extension in UNREAD_KINDS:  # not recognised by content: the name is all there is to go by
        return _unread(path, UNREAD_KINDS[extension])
    return None


def _classify(path: Path, seen_files: set[tuple[int, int]]) -> FoundFile | SkippedFile | None:
    extension = path.suffix.lower()
    if extension in IMAGE_EXTENSIONS:
        return _inspect(path, seen_files)  # the decoder tells the format by content
    if extension in NOT_MEDIA_EXTENSIONS:
        return None  # never opened: a scan of a big tree stays a stat per photo
    return _by_content(path, seen_files)


def _inspect(path: Path, seen_files: set[tuple[int, int]]) -> FoundFile | SkippedFile | None:
    try:
        st = path.stat()  # follows symlinks: a link to a photo indexes the photo
    except FileNotFoundError:
        return SkippedFile(path, "broken symbolic link" if path.is_symlink() else "file vanished during the scan")
    except OSError as e:
        return SkippedFile(path, f"cannot read file information: {e.strerror or e}")
    if stat.S_ISDIR(st.st_mode):
        return None  # a folder named like a photo is walked as a folder
    if not stat.S_ISREG(st.st_mode):
        return SkippedFile(path, "not a regular file (FIFO, socket or device)")
    key = (st.st_dev, st.st_ino)
    if key in seen_files:
        return None  # the same file reached through another link
    seen_files.add(key)
    return FoundFile(path, st.st_size, st.st_mtime_ns)


def scan_paths(roots: Iterable[Path | str]) -> Iterator[FoundFile | SkippedFile]:
    """Yield every image file under the roots (files may be given directly), each physical file once.

    Hidden files and folders (name starting with '.') are skipped; symlinked folders are followed,
    but a folder already walked (a loop, or a link back up the tree) is not walked again.
    """
    seen_files: set[tuple[int, int]] = set()
    seen_dirs: set[tuple[int, int]] = set()
    for root in roots:
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            if root_path.exists() or root_path.is_symlink():
                path = root_path.absolute()
                found = _inspect(path, seen_files) if path.suffix.lower() in IMAGE_EXTENSIONS else None
                if found is None and path.suffix.lower() not in IMAGE_EXTENSIONS:
                    found = _by_content(path, seen_files)
                    if found is None:  # named by the user: say why it is not taken
                        found = SkippedFile(path, "not a picture (its content is of no kind xmodal reads)")
                if found is not None:
                    yield found
            else:
                yield SkippedFile(root_path, "no such file or folder")
            continue
        for dirpath, dirnames, filenames in os.walk(root_path.absolute(), followlinks=True):
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen_dirs:
                dirnames[:] = []  # symlink loop or a second link to a walked folder
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                found = _classify(Path(dirpath, name), seen_files)
                if found is not None:
                    yield found
            # os.walk lists symlinks to folders as dirnames and broken links as filenames; a dir
            # symlink named like a photo is walked as a folder, handled above.

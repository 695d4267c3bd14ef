"""Finding the photos under the paths a user gives: recursive, hidden folders skipped, each file once."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xmodal.indexer.images import IMAGE_EXTENSIONS

__all__ = ["FoundFile", "SkippedFile", "UNREAD_KINDS", "UNREAD_PREFIX", "scan_paths", "unread_extension"]

# Files people keep beside their photos that the indexer does not read. They are reported as skipped,
# by extension, so a photographer learns why part of a shoot is missing.
_RAW = (
    ".cr2",
    ".cr3",
    ".crw",
    ".nef",
    ".nrw",
    ".dng",
    ".arw",
    ".srf",
    ".sr2",
    ".orf",
    ".rw2",
    ".raf",
    ".pef",
    ".srw",
    ".x3f",
    ".3fr",
    ".erf",
    ".kdc",
    ".mrw",
    ".raw",
    ".rwl",
    ".iiq",
    ".mef",
    ".mos",
)
_VIDEO = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".3gp", ".mts", ".m2ts", ".wmv", ".webm", ".mpg", ".mpeg", ".flv")
UNREAD_KINDS: dict[str, str] = {**{e: "camera RAW" for e in _RAW}, **{e: "video" for e in _VIDEO}}
UNREAD_PREFIX = "not read by xmodal: "  # how a skipped file's reason starts in the failures table


@dataclass(frozen=True)
class FoundFile:
    """A regular image file, with the stat facts used to skip unchanged files."""

    path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class SkippedFile:
    """A path that looked like an image but could not be taken (broken link, FIFO, no access)."""

    path: Path
    reason: str
    unread: str | None = None  # the extension, for a file of a kind xmodal does not read (not a failure)


def unread_extension(reason: str, path: str) -> str | None:
    """The extension of a recorded skip of an unread kind, None for a real failure."""
    return os.path.splitext(path)[1].lower() if reason.startswith(UNREAD_PREFIX) else None


def _unread(path: Path) -> SkippedFile:
    extension = path.suffix.lower()
    reason = f"{UNREAD_PREFIX}{UNREAD_KINDS[extension]} ({extension}); convert it to JPEG, PNG or TIFF to index it"
    return SkippedFile(path, reason, extension)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


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
            if root_path.suffix.lower() in UNREAD_KINDS and root_path.is_file():
                yield _unread(root_path.absolute())
            elif root_path.exists() or root_path.is_symlink():
                found = _inspect(root_path.absolute(), seen_files)
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
                if not _is_image_name(name):
                    if os.path.splitext(name)[1].lower() in UNREAD_KINDS:
                        yield _unread(Path(dirpath, name))
                    continue
                found = _inspect(Path(dirpath, name), seen_files)
                if found is not None:
                    yield found
            # os.walk lists symlinks to folders as dirnames and broken links as filenames; a dir
            # symlink named like a photo is walked as a folder, handled above.

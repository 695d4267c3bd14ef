"""Finding the photos under the paths a user gives: recursive, hidden folders skipped, each file once."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xmodal.indexer.images import IMAGE_EXTENSIONS

__all__ = ["FoundFile", "SkippedFile", "scan_paths"]


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
            if root_path.exists() or root_path.is_symlink():
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
                if name.startswith(".") or not _is_image_name(name):
                    continue
                found = _inspect(Path(dirpath, name), seen_files)
                if found is not None:
                    yield found
            # os.walk lists symlinks to folders as dirnames and broken links as filenames; a dir
            # symlink named like a photo is walked as a folder, handled above.

"""A listing of files to index, read from a file instead of walking folders.

For collections of millions of files a walk by one process is the slow part; a listing made once
(by `find`, a storage inventory, img2dataset's output) is read instead:

    paths.txt       one path a line (blank lines and lines starting with '#' are skipped)
    paths.parquet   a column `path` (or `image_path`); optional `size` and `mtime_ns` columns
                    spare a stat per file (the incremental check compares both)

Relative paths are taken relative to the folder of the listing file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer.scanning import FoundFile, SkippedFile, media_of

__all__ = ["read_listing", "listed_paths"]

_PATH_COLUMNS = ("path", "image_path", "filepath")
_PARQUET_BATCH = 65_536


def listed_paths(listing: Path | str) -> Iterator[tuple[str, int | None, int | None]]:
    """(path, size or None, mtime_ns or None) for each entry of the listing, in its order."""
    listing = Path(listing).expanduser()
    base = listing.absolute().parent
    if not listing.is_file():
        raise InvalidInputError(f"listing '{listing}' not found")

    def absolute(text: str) -> str:
        path = Path(text).expanduser()
        return os.path.abspath(path if path.is_absolute() else base / path)

    if listing.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise InvalidInputError("reading a .parquet listing needs pyarrow: `pip install 'xmodal[ray]'`") from e
        try:
            parquet = pq.ParquetFile(listing)
        except Exception as e:
            raise InvalidInputError(f"listing '{listing}' is not a readable parquet file: {e}") from e
        names = parquet.schema_arrow.names
        column = next((c for c in _PATH_COLUMNS if c in names), None)
        if column is None:
            raise InvalidInputError(
                f"listing '{listing}' has no path column (one of {', '.join(_PATH_COLUMNS)}); "
                f"columns: {', '.join(names)}"
            )
        extra = [c for c in ("size", "mtime_ns") if c in names]
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH, columns=[column, *extra]):
            data = batch.to_pydict()
            sizes = data.get("size") or [None] * batch.num_rows
            mtimes = data.get("mtime_ns") or [None] * batch.num_rows
            for text, size, mtime in zip(data[column], sizes, mtimes):
                if text:
                    yield absolute(text), size, mtime
        return
    try:
        with open(listing, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                text = line.rstrip("\n").rstrip("\r")
                if text.strip() and not text.lstrip().startswith("#"):
                    yield absolute(text), None, None
    except OSError as e:
        raise InvalidInputError(f"listing '{listing}' cannot be read: {e.strerror or e}") from e


def read_listing(listing: Path | str) -> Iterator[FoundFile | SkippedFile]:
    """The listed files as the folder scan gives them: each file once, with its size and mtime.

    A listed path that is missing or not a regular file becomes a SkippedFile with a reason, as in
    a scan. Where the listing carries size and mtime_ns, the file is not stat'ed at all.
    """
    seen: set[str] = set()
    for path, size, mtime_ns in listed_paths(listing):
        if path in seen:
            continue
        seen.add(path)
        if size is not None and mtime_ns is not None:
            yield FoundFile(Path(path), int(size), int(mtime_ns), media_of(Path(path)))
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            yield SkippedFile(Path(path), "no such file or folder")
            continue
        except OSError as e:
            yield SkippedFile(Path(path), f"cannot read file information: {e.strerror or e}")
            continue
        if not stat.S_ISREG(st.st_mode):
            yield SkippedFile(Path(path), "not a regular file (FIFO, socket or device)")
            continue
        yield FoundFile(Path(path), st.st_size, st.st_mtime_ns, media_of(Path(path)))

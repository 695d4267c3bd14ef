"""Sources of work items: where an indexing run learns which files there are.

A source is an iterable of `FoundFile` (a file to index) and `SkippedFile` (a path that could not
be taken, or of a kind not read) plus the roots it speaks for: under those roots a file the source
does not yield has left, so its row is removed or followed to where it moved (never for a root
that looks offline; see indexer.roots). Two exist:

* `FolderWalk` — the folders and files a user names, walked (indexer.scanning.scan_paths);
* `ListedFiles` — a listing read from a file (indexer.listing.read_listing), for collections too
  large to walk; its roots only say where files that left the listing are removed.

`Indexer.add_from(source)` runs one; `Indexer.add_paths(paths, listing=...)` builds one of these.
How the found files are then embedded (this process's decode pool, a Ray cluster) is a separate
choice: both feed the one write loop (`Indexer.write_loop`).

A new source (a storage bucket's inventory, a video's frames) implements `Source`: `roots`,
`names_files` and iteration.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from xmodal.indexer.paths import absolute
from xmodal.indexer.scanning import FoundFile, SkippedFile, scan_paths

__all__ = ["Source", "FolderWalk", "ListedFiles"]


@runtime_checkable
class Source(Protocol):
    """Work items for one indexing run, and the roots whose missing files it can vouch for."""

    @property
    def roots(self) -> Sequence[Path]:
        """Absolute paths (folders or single files) this source speaks for."""
        ...

    @property
    def names_files(self) -> bool:
        """True when the source names its files one by one (a listing) rather than finding them
        under its roots: a named file outside the roots is compared with the index too (and never
        removed for being absent)."""
        ...

    def __iter__(self) -> Iterator[FoundFile | SkippedFile]: ...


@dataclass(frozen=True)
class FolderWalk:
    """Every file under the roots, found by walking them (hidden folders skipped, each file once)."""

    roots: Sequence[Path]

    @property
    def names_files(self) -> bool:
        return False

    @classmethod
    def of(cls, paths: Iterable[Path | str]) -> FolderWalk:
        return cls(tuple(absolute(p) for p in paths))

    def __iter__(self) -> Iterator[FoundFile | SkippedFile]:
        return scan_paths(self.roots)


@dataclass(frozen=True)
class ListedFiles:
    """The files of a listing (indexer.listing.read_listing, or any iterable of found/skipped files),
    taken as they are; `roots` say where files that left the listing are removed (may be empty)."""

    items: Iterable[FoundFile | SkippedFile]
    roots: Sequence[Path] = ()

    @property
    def names_files(self) -> bool:
        return True

    @classmethod
    def of(cls, items: Iterable[FoundFile | SkippedFile], paths: Iterable[Path | str] = ()) -> ListedFiles:
        return cls(items, tuple(absolute(p) for p in paths))

    def __iter__(self) -> Iterator[FoundFile | SkippedFile]:
        return iter(self.items)

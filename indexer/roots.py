"""The folders a user indexed (the index's roots), and whether each is online.

An index records the folders its runs were given (the meta key `roots`), so a watcher watches
them (a new subfolder is indexed too) and `xmodal info` can say which are offline. A root is
*offline* when it is not there, or is a folder with nothing visible in it while the index holds
photos under it: an unmounted drive looks like either. The rows of an offline root are kept; only
an explicit prune (`--prune-missing`) or `xmodal remove` drops them.

Indexes made before roots were recorded fall back to the folders holding their photos.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from xmodal.indexer.paths import folder_prefixes
from xmodal.indexer.store.schema import ImageRow, MetadataStore, under_clause

__all__ = [
    "is_inside",
    "minimal_folders",
    "folders_of",
    "recorded_roots",
    "remember_roots",
    "forget_roots",
    "indexed_roots",
    "looks_offline",
    "rows_under",
    "offline_roots",
]

_ROOTS_KEY = "roots"


def is_inside(path: str, folder: str) -> bool:
    """path is the folder itself or lies under it (the platform's separator, no symlinks resolved)."""
    spelled, inside = folder_prefixes(folder)
    return path == spelled or path.startswith(inside)


def minimal_folders(folders: Iterable[str]) -> list[str]:
    """The folders that are not inside another one of the set (an index run is recursive)."""
    kept: list[str] = []
    for folder in sorted({os.path.normpath(f) for f in folders}):
        if not any(is_inside(folder, k) for k in kept):
            kept.append(folder)
    return kept


def folders_of(image_paths: Iterable[str]) -> list[str]:
    """The folders holding these photos, reduced to the outermost: what an index demonstrably
    covers when it has no roots recorded."""
    return minimal_folders(os.path.dirname(p) for p in image_paths)


def recorded_roots(metadata: MetadataStore) -> list[str]:
    """The folders runs were given, as recorded (empty for an index made before they were)."""
    raw = metadata.get_meta().get(_ROOTS_KEY)
    try:
        roots = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [r for r in roots if isinstance(r, str)]


def _write(metadata: MetadataStore, session: Session, roots: Sequence[str]) -> None:
    metadata.set_meta({_ROOTS_KEY: json.dumps(sorted(set(roots)))}, session)


def remember_roots(metadata: MetadataStore, session: Session, folders: Iterable[str]) -> None:
    """Record folders a run was given. One inside a recorded root adds nothing (a watcher's runs
    over subfolders) unless it is a mount point; a recorded root inside a new one stays: either
    may be a drive of its own, offline on its own."""
    roots = recorded_roots(metadata)
    new = [f for f in folders if f not in roots and (os.path.ismount(f) or not any(is_inside(f, r) for r in roots))]
    if new:
        _write(metadata, session, roots + new)


def forget_roots(metadata: MetadataStore, session: Session, paths: Iterable[str]) -> None:
    """Drop the recorded roots inside any of the paths (`xmodal remove`)."""
    paths = list(paths)
    roots = recorded_roots(metadata)
    kept = [r for r in roots if not any(is_inside(r, p) for p in paths)]
    if len(kept) != len(roots):
        _write(metadata, session, kept)


def indexed_roots(metadata: MetadataStore) -> list[str]:
    """The roots a watcher watches and `info` reports: the recorded ones, else (an older index)
    the folders holding its photos."""
    roots = recorded_roots(metadata)
    if roots:
        return sorted(roots)
    with metadata.session() as s:
        return folders_of(s.scalars(select(ImageRow.path)))


def looks_offline(folder: str) -> bool:
    """Not there, or a folder with nothing visible in it (an empty mount point)."""
    try:
        with os.scandir(folder) as entries:
            return not any(not e.name.startswith(".") for e in entries)
    except OSError:  # missing, not a folder, or unreadable: its files cannot be judged gone
        return True


def rows_under(metadata: MetadataStore, folder: str) -> int:
    """Photos the index holds under the folder."""
    with metadata.session() as s:
        return int(
            s.scalar(select(func.count()).select_from(ImageRow).where(under_clause(ImageRow.path, [folder]))) or 0
        )


def offline_roots(metadata: MetadataStore, roots: Iterable[str] | None = None) -> list[str]:
    """The roots (default: the index's) that look offline while the index holds photos under them."""
    candidates = indexed_roots(metadata) if roots is None else list(roots)
    return [r for r in candidates if looks_offline(r) and rows_under(metadata, r) > 0]

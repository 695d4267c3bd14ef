"""RAW+JPEG pairs: a camera that records both writes two files of one shot, `IMG_0001.CR2` and
`IMG_0001.JPG`, in one folder. Both are indexed; in results they are one hit.

A pair (or a larger set: RAW, JPEG and HEIC of one shot) is the files of one folder with the same
name before the extension, at least one of them named as a camera RAW (indexer.kinds.RAW_EXTENSIONS)
and one not. Its hit takes the place and score of the shot's best-ranked file and shows the file a
viewer opens, the one not named RAW (the JPEG); `Hit.pair` lists the shot's other files. Which files
make a shot is read from the index (SQL) for the hits at hand, whatever their rank, so a list stays
the prefix of a longer one. Files a search's filters leave out take no part.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from xmodal.indexer.images import IMAGE_EXTENSIONS
from xmodal.indexer.kinds import RAW_EXTENSIONS
from xmodal.indexer.store.schema import ImageRow
from xmodal.search.hits import Hit

__all__ = ["fold_pairs", "shot_of"]

Shot = tuple[str, str]  # (folder, name before the extension)
_QUERY_CHUNK = 16  # shots per SQL statement (about 100 names each)
_EXTENSIONS = sorted({case(e) for e in RAW_EXTENSIONS | IMAGE_EXTENSIONS for case in (str.lower, str.upper, str.title)})


def shot_of(path: str) -> Shot:
    folder, name = os.path.split(path)
    return folder, os.path.splitext(name)[0]


def _is_raw_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in RAW_EXTENSIONS


def _shot_files(session: Session, shots: Sequence[Shot]) -> dict[Shot, list[tuple[int, str]]]:
    """Every indexed file of each shot: (id, path). Looked up by exact path (the path index, the same
    on every backend): the shot's name with each picture and RAW extension, in lower, upper and
    title case (`IMG_0001.CR2`, `img_0001.jpg`, `IMG_0001.Jpg`)."""
    found: dict[Shot, list[tuple[int, str]]] = {}
    wanted = set(shots)
    for start in range(0, len(shots), _QUERY_CHUNK):
        names = [
            os.path.join(folder, stem + ext)
            for folder, stem in shots[start : start + _QUERY_CHUNK]
            for ext in _EXTENSIONS
        ]
        for row in session.execute(select(ImageRow.id, ImageRow.path).where(ImageRow.path.in_(names))):
            shot = shot_of(row.path)
            if shot in wanted:
                found.setdefault(shot, []).append((int(row.id), str(row.path)))
    return found


def fold_pairs(
    hits: Sequence[Hit],
    session: Session,
    allowed: Callable[[int], bool] | None = None,
    exclude_shot: Shot | None = None,
) -> list[Hit]:
    """The hits with each RAW+JPEG shot folded into one (see the module). `allowed`: which ids the
    search's filters admit (None: all); `exclude_shot`: the shot of a "more like this" query item,
    whose other files are left out (they are that photo)."""
    images = [h for h in hits if h.kind == "image"]
    if not images:
        return list(hits)
    files = _shot_files(session, list(dict.fromkeys(shot_of(h.path) for h in images)))
    out: list[Hit] = []
    placed: set[Shot] = set()
    for hit in hits:
        if hit.kind != "image":
            out.append(hit)
            continue
        shot = shot_of(hit.path)
        members = [(i, p) for i, p in files.get(shot, [(hit.id, hit.path)]) if allowed is None or allowed(i)]
        raw = [m for m in members if _is_raw_name(m[1])]
        shown = [m for m in members if not _is_raw_name(m[1])]
        if len(members) < 2 or not raw or not shown:
            out.append(hit)  # no pair: the file alone
            continue
        if shot in placed or shot == exclude_shot:
            continue  # the shot's better-ranked file stands for it (or the query is that shot)
        placed.add(shot)
        chosen = next((m for m in shown if m[0] == hit.id), min(shown, key=lambda m: m[1]))
        others = tuple(sorted(p for i, p in members if i != chosen[0]))
        out.append(replace(hit, id=chosen[0], path=chosen[1], pair=others))
    return out

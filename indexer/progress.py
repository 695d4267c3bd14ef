"""Progress of an indexing run, reported to the caller's callback (the library never draws it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Progress"]


@dataclass(frozen=True)
class Progress:
    """`done` of `total` in one stage: "index" (photos), or a one-time preparation such as
    "exporting the text query encoder" or "embedding the query bank" (indexer.preparation)."""

    done: int
    total: int
    stage: str = "index"

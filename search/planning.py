"""What the planner reads a query against (one index's places, photo text and names), and how
the parts it read act on a search: dates and places as filters inside it, words in the photo and
names as scores fused with the visual one (search.part_fusion)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from typing import Protocol

import numpy as np
from sqlalchemy import select

from xmodal.indexer.store.schema import ImageRow
from xmodal.search.filters import SearchFilter
from xmodal.search.hits import Hit
from xmodal.search.names import NameIndex
from xmodal.search.part_fusion import DEFAULT_WEIGHTS, FusionWeights, fuse
from xmodal.search.understanding import QueryPlanner, Understood

__all__ = ["WordScorer", "PhotoTextWords", "IndexVocabulary", "understood_filter", "fuse_hits", "matched_parts"]


class WordScorer(Protocol):
    """Words scored against a text of each photo (its OCR text, its names)."""

    def known(self, words: Sequence[str]) -> set[str]:
        """Which of the words some photo has."""
        ...

    def matching(self, words: Sequence[str]) -> np.ndarray:
        """Ids of the photos that have any of the words."""
        ...

    def score(self, ids: np.ndarray, words: Sequence[str]) -> np.ndarray:
        """Per id, how much of the words the photo has, in [0, 1]."""
        ...


class PhotoTextWords:
    """The text read in photos as a WordScorer, through `text_matches` ({photo id: score} of the
    photos whose text holds any of some words: SearchEngine.text_matches). Nothing is cached: the
    text is read in a stage of its own, after the photos' rows are written."""

    _MIN_LETTERS = 3  # shorter words ("a", "on") are in every sign

    def __init__(self, text_matches: Callable[[Sequence[str]], dict[int, float]]) -> None:
        self.text_matches = text_matches

    def known(self, words: Sequence[str]) -> set[str]:
        """The words some photo's text holds exactly (not merely one letter off)."""
        words = [w for w in dict.fromkeys(words) if len(w) >= self._MIN_LETTERS]
        if not words or not self.text_matches(words):  # one read when no photo has any of them
            return set()
        out = set()
        for word in words:
            if len(word) >= self._MIN_LETTERS and any(s >= 1.0 for s in self.text_matches([word]).values()):
                out.add(word)
        return out

    def matching(self, words: Sequence[str]) -> np.ndarray:
        return np.array(sorted(self.text_matches(list(words))), dtype=np.int64)

    def score(self, ids: np.ndarray, words: Sequence[str]) -> np.ndarray:
        found = self.text_matches(list(words))
        return np.array([min(1.0, found.get(int(i), 0.0)) for i in ids], dtype=np.float32)


@dataclass(frozen=True)
class IndexVocabulary:
    """One generation of an index's vocabulary, and the planner reading queries against it."""

    generation: tuple[int, ...]  # of what it was read from: photos, facts
    planner: QueryPlanner
    names: WordScorer
    photo_text: WordScorer | None = None

    @classmethod
    def build(
        cls, store: object, generation: tuple[int, ...], places: Sequence[str], photo_text: WordScorer | None = None
    ) -> IndexVocabulary:
        with store.metadata.session() as s:  # type: ignore[attr-defined]
            names = NameIndex((int(r.id), str(r.path)) for r in s.execute(select(ImageRow.id, ImageRow.path)))
        planner = QueryPlanner(
            places=places,
            photo_words=photo_text.known if photo_text is not None else None,
            name_words=names.known,
        )
        return cls(generation, planner, names, photo_text)


def understood_filter(filters: SearchFilter | None, understood: Understood) -> SearchFilter | None:
    """The caller's filters narrowed by the query's place (a place the caller gave wins) and dates
    (both bounds kept: the later start, the earlier end)."""
    if understood.place and not (filters and filters.place):
        filters = replace(filters or SearchFilter(), place=understood.place)
    if understood.dates is None:
        return filters
    base = filters or SearchFilter()
    after = datetime.combine(understood.dates.start, time())
    before = datetime.combine(understood.dates.end + timedelta(days=1), time())
    return replace(
        base,
        after=max(after, base.after.replace(tzinfo=None)) if base.after else after,
        before=min(before, base.before.replace(tzinfo=None)) if base.before else before,
    )


def matched_parts(understood: Understood, visual: bool, text: float, name: float) -> list[str]:
    out = []
    if visual and understood.visual:
        out.append("visual")
    if text > 0:
        out.append("text_in_photo")
    if understood.place:
        out.append("place")
    if understood.dates:
        out.append("date")
    if name > 0:
        out.append("name")
    return out


def fuse_hits(
    understood: Understood,
    visual_hits: Sequence[Hit],
    extra_hits: Sequence[Hit],
    vocabulary: IndexVocabulary,
    weights: FusionWeights = DEFAULT_WEIGHTS,
) -> list[Hit]:
    """The visual hits and the photos found by their words (`extra_hits`, scored by their plain
    cosine), in the fused order, each with the parts it matched."""
    hits = [*visual_hits, *extra_hits]
    if not hits:
        return []
    ids = np.array([h.id for h in hits], dtype=np.int64)
    visual = np.array([h.score for h in hits], dtype=np.float32)
    text = np.zeros(len(ids), dtype=np.float32)
    if understood.in_photo and vocabulary.photo_text is not None:
        text = vocabulary.photo_text.score(ids, list(understood.in_photo))
    name = vocabulary.names.score(ids, list(understood.names)) if understood.names else np.zeros_like(text)
    fused = fuse(visual, text, name, weights, quoted=bool(understood.quoted))
    order = np.argsort(-fused, kind="stable")
    n_visual = len(visual_hits)
    return [
        replace(
            hits[i],
            score=float(fused[i]),
            matched=matched_parts(understood, i < n_visual, float(text[i]), float(name[i])),
        )
        for i in order
    ]

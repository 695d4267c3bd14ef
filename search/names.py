"""Words of the photos' file and folder names ("2019 Lisbon trip/anna-birthday.jpg"), to score a
query's words against: each photo's own file name and the two folders nearest to it (the folders
above them are the library's, shared by every photo)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import PurePath

import numpy as np

__all__ = ["NameIndex", "name_words"]

_WORD = re.compile(r"[^\W\d_]{3,}")
_FOLDERS = 2
# A word in more than this share of the photos tells none of them apart ("img", "dsc", "photos").
_MAX_SHARE = 0.5


def name_words(path: str) -> set[str]:
    parts = PurePath(path).parts
    near = [PurePath(path).stem, *parts[-1 - _FOLDERS : -1]]
    return {w.lower() for part in near for w in _WORD.findall(part.replace("_", " "))}


class NameIndex:
    """word -> ids of the photos whose names have it, with inverse document frequencies."""

    def __init__(self, rows: Iterable[tuple[int, str]]) -> None:
        found: dict[str, list[int]] = defaultdict(list)
        count = 0
        for item_id, path in rows:
            count += 1
            for word in name_words(path):
                found[word].append(int(item_id))
        self.count = count
        self.ids = {
            w: np.asarray(sorted(ids), dtype=np.int64) for w, ids in found.items() if len(ids) <= _MAX_SHARE * count
        }

    def known(self, words: Sequence[str]) -> set[str]:
        return {w for w in words if w.lower() in self.ids}

    def idf(self, word: str) -> float:
        return float(np.log(1 + self.count / len(self.ids[word])))

    def matching(self, words: Sequence[str]) -> np.ndarray:
        """Ids of the photos whose names have any of the words."""
        arrays = [self.ids[w] for w in words if w in self.ids]
        return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.int64)

    def score(self, ids: np.ndarray, words: Sequence[str]) -> np.ndarray:
        """Per id, the idf-weighted share of `words` its names have, in [0, 1]."""
        known = [w for w in dict.fromkeys(words) if w in self.ids]
        out = np.zeros(len(ids), dtype=np.float32)
        if not known:
            return out
        weights = np.array([self.idf(w) for w in known], dtype=np.float32)
        for weight, word in zip(weights, known):
            out += weight * np.isin(ids, self.ids[word])
        return out / float(weights.sum())

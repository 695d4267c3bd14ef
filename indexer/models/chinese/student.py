"""The trained part of the Chinese path: a correction, learned by distillation, that moves the
English tower's vector of a dictionary translation toward where the English captions of the same
photos (teacher) and the photos themselves (second teacher) lie.

    vector = normalise(unit(english_tower(translation)) + mean of E[f] over the text's features f)

Features are the Chinese words and characters of the text; E is a small table fitted by
`training.chinese_distillation` (training/train_chinese.py makes the shipped file). The
correction lives in the MiniLM sentence space, which is the offline models' text space; other
models get the translation alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.indexer.models.chinese.translation import SensePrior, Translation

__all__ = ["ChineseStudent", "text_features", "CHAR_FEATURE", "STUDENT_FILE", "STUDENT_FORMAT", "SENTENCE_SPACE"]

STUDENT_FILE = "chinese_lite.npz"  # in xmodal.data
STUDENT_FORMAT = "chinese-student-v2"  # v2: the sense chosen for training words
SENTENCE_SPACE = "all-MiniLM-L6-v2"  # the offline towers' text space, where the correction applies
CHAR_FEATURE = "#"  # prefix of character features (a word is itself)


def text_features(translation: Translation) -> list[str]:
    """The features the correction reads: each Chinese word, and each of its characters (which
    carry meaning for words the training never saw: 黑狗 shares 狗 with 小狗)."""
    return list(translation.words) + [CHAR_FEATURE + c for c in "".join(translation.words)]


@dataclass(frozen=True)
class ChineseStudent:
    prior: SensePrior  # what the translation's sense choice reads
    vocabulary: Mapping[str, int]  # feature -> row of `table`
    table: np.ndarray  # (features, dim) float32: each feature's learned correction
    space: str  # the text space it was fitted in (the offline towers' sentence model)

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    def knows(self, word: str) -> bool:
        return word in self.vocabulary

    def correct(self, english_vectors: np.ndarray, translations: Iterable[Translation]) -> np.ndarray:
        """(n, dim) unit rows: the translations' English vectors plus their learned correction."""
        out = english_vectors.astype(np.float32, copy=True)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        for row, translation in enumerate(translations):
            rows = [self.vocabulary[f] for f in text_features(translation) if f in self.vocabulary]
            if rows:
                out[row] += self.table[rows].mean(axis=0)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def save(self, path: Path) -> None:
        words = sorted(self.prior.english_counts)
        features = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        np.savez_compressed(
            path,
            format=np.array(STUDENT_FORMAT),
            space=np.array(self.space),
            english_words=np.array(words),
            english_counts=np.array([self.prior.english_counts[w] for w in words], dtype=np.int32),
            chosen_words=np.array(sorted(self.prior.chosen), dtype=str),
            chosen_glosses=np.array([self.prior.chosen[w] for w in sorted(self.prior.chosen)], dtype=str),
            features=np.array(features),
            table=self.table.astype(np.float16),
        )

    @classmethod
    def load(cls, path: Path) -> ChineseStudent:
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) != STUDENT_FORMAT:
                raise ValueError(f"{path} is not a Chinese student of format {STUDENT_FORMAT}")
            counts = dict(zip(map(str, data["english_words"]), map(int, data["english_counts"])))
            chosen = dict(zip(map(str, data["chosen_words"]), map(str, data["chosen_glosses"])))
            vocabulary = {str(f): k for k, f in enumerate(data["features"])}
            prior = SensePrior(counts, chosen)
            return cls(prior, vocabulary, data["table"].astype(np.float32), str(data["space"]))

"""One ranking from the visual score and the scores of the words a query asks for: the words in the
photo (its OCR text) and the words of its file and folder names.

    fused = visual + text_in_photo_weight · text_in_photo + name_weight · name

`visual` is the hit's score on the cosine scale; `text_in_photo` and `name` are in [0, 1] (the share
of the asked-for words a photo has, see search.names and the OCR scorer). Quoted words are asked
for outright, so their weight is large enough to put every photo that has them first; words that
merely also occur in some photo's text or name only nudge the order. A learned second stage may
take the same three columns as features (`fusion_features`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_WEIGHTS", "FusionWeights", "fuse", "fusion_features"]


@dataclass(frozen=True)
class FusionWeights:
    text_in_photo: float = 0.1  # words of the query that some photo's text also has
    quoted: float = 1.0  # quoted words: asked for outright
    name: float = 0.1  # words of the file and folder names


DEFAULT_WEIGHTS = FusionWeights()


def fusion_features(visual: np.ndarray, text_in_photo: np.ndarray, name: np.ndarray) -> np.ndarray:
    """(n, 3) float32 columns: visual, text_in_photo, name."""
    return np.stack([visual, text_in_photo, name], axis=1).astype(np.float32)


def fuse(
    visual: np.ndarray,
    text_in_photo: np.ndarray,
    name: np.ndarray,
    weights: FusionWeights = DEFAULT_WEIGHTS,
    quoted: bool = False,
) -> np.ndarray:
    """The fused score of each candidate (same length as the inputs); see the module's note."""
    text_weight = weights.quoted if quoted else weights.text_in_photo
    return (visual + text_weight * text_in_photo + weights.name * name).astype(np.float32)

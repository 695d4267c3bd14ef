"""The second stage's options and its pure building blocks (search.rerank.pipeline runs them).

Stages, each optional:
  hubness    querybank normalisation (QB-Norm, inverted softmax; search.rerank.qbnorm): gallery
             items that are close to every query ("hubs") are scaled down; needs no training
  learned    text→image where the model ships one: a linear fusion of cheap signals re-scores the
             top candidates (search.rerank.fusion), trained on the flickr8k-1k train split
  floor      --min-score: candidates scoring below it leave before any reordering (a filter on each
             hit's own score; "auto" derives the floor from the candidates' score distribution)
  diverse    maximal marginal relevance with weight λ
  collapse   near-duplicates (cosine ≥ threshold to a better hit) fold into one hit, the best copy
The candidates' scores are the first stage's exact inner products (flat search, or IVF candidates
re-scored with the full vectors): no stage scores them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AUTO_SPREAD",
    "RerankOptions",
    "auto_score_floor",
    "fold_duplicates",
    "maximal_marginal_relevance",
]

# "auto" keeps hits scoring this many robust standard deviations (1.4826 · MAD) above the median of
# the top candidates. On 300 flickr8k photos with the default model, 12 everyday queries kept 2–20
# hits each (3× kept none for half of them).
AUTO_SPREAD = 2.0


@dataclass(frozen=True)
class RerankOptions:
    candidates: int = 100  # first-stage candidates re-ranked together (deeper hits: further blocks of this size)
    hubness: bool = True
    learned: bool = True  # the learned fusion (search.rerank.fusion), where the index's model has one
    diverse: float | None = None  # MMR λ in (0, 1]: 1 = pure relevance
    duplicate_threshold: float | None = None  # e.g. 0.97 collapses near-identical photos


def auto_score_floor(scores: np.ndarray) -> float:
    """The floor "auto" applies: median + AUTO_SPREAD robust deviations of `scores` (the top
    candidates' final scores, a fixed depth: never the number of hits asked for), at most the best
    score so that the best hit always stays; -inf without scores."""
    finite = scores[np.isfinite(scores)]
    if len(finite) == 0:
        return -np.inf
    median = float(np.median(finite))
    spread = 1.4826 * float(np.median(np.abs(finite - median)))
    return min(median + AUTO_SPREAD * spread, float(finite.max()))


def maximal_marginal_relevance(
    scores: np.ndarray, vectors: np.ndarray, k: int, lam: float, shown: np.ndarray | None = None
) -> np.ndarray:
    """Order of candidates by MMR: λ·relevance − (1−λ)·max similarity to those already chosen.

    `shown`: vectors of hits already placed before these candidates (an earlier block), which count
    as chosen."""
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    sims = vectors @ vectors.T
    if shown is not None and len(shown):
        redundancy = (vectors @ shown.T).max(axis=1)
    else:
        redundancy = np.full(n, -np.inf)  # nothing chosen yet: the first pick is the most relevant
    chosen: list[int] = []
    remaining = np.ones(n, dtype=bool)
    while len(chosen) < min(k, n):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        value = lam * scores - (1.0 - lam) * penalty
        value[~remaining] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        remaining[best] = False
        redundancy = np.maximum(redundancy, sims[best])
    return np.array(chosen, dtype=np.int64)


def fold_duplicates(
    order: np.ndarray,
    vectors: np.ndarray,
    threshold: float,
    preference: Sequence[tuple[object, ...]] | None = None,
    shown: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Near-duplicate groups in rank order: (position of each group, its chosen copy, copies folded).

    A candidate whose cosine to a better-ranked group's first member is at least `threshold` joins that
    group. The group keeps the place of its best-ranked member and shows the copy that sorts first by
    `preference` (e.g. largest pixel count, then largest file, then oldest), by rank without one.
    Candidates that duplicate a `shown` vector (hits placed earlier) are dropped."""
    leaders: list[int] = []
    members: list[list[int]] = []
    for index in order:
        v = vectors[index]
        if shown is not None and len(shown) and float((shown @ v).max()) >= threshold:
            continue
        for group, leader in enumerate(leaders):
            if float(v @ vectors[leader]) >= threshold:
                members[group].append(int(index))
                break
        else:
            leaders.append(int(index))
            members.append([int(index)])
    if preference is None:
        chosen = [group[0] for group in members]
    else:
        chosen = [min(group, key=lambda i: (preference[i], group.index(i))) for group in members]
    return (
        np.array(leaders, dtype=np.int64),
        np.array(chosen, dtype=np.int64),
        np.array([len(group) - 1 for group in members], dtype=np.int64),
    )

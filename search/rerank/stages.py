"""The second stage's options and its pure building blocks (search.rerank.pipeline runs them).

Stages, each optional:
  hubness    querybank normalisation (QB-Norm, inverted softmax; search.rerank.qbnorm): gallery
             items that are close to every query ("hubs") are scaled down; needs no training
  learned    text→image where the model ships one: a linear fusion of cheap signals re-scores the
             top candidates (search.rerank.fusion), trained on the flickr8k-1k train split
  diverse    maximal marginal relevance with weight λ
  collapse   near-duplicates (cosine ≥ threshold to a better hit) are dropped
The candidates' scores are the first stage's exact inner products (flat search, or IVF candidates
re-scored with the full vectors): no stage scores them again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RerankOptions", "maximal_marginal_relevance", "collapse_duplicates"]


@dataclass(frozen=True)
class RerankOptions:
    candidates: int = 100
    hubness: bool = True
    learned: bool = True  # the learned fusion (search.rerank.fusion), where the index's model has one
    diverse: float | None = None  # MMR λ in (0, 1]: 1 = pure relevance
    duplicate_threshold: float | None = None  # e.g. 0.97 collapses near-identical photos


def maximal_marginal_relevance(scores: np.ndarray, vectors: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Order of candidates by MMR: λ·relevance − (1−λ)·max similarity to those already chosen."""
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    sims = vectors @ vectors.T
    chosen: list[int] = [int(np.argmax(scores))]
    redundancy = sims[chosen[0]].copy()
    remaining = np.ones(n, dtype=bool)
    remaining[chosen[0]] = False
    while len(chosen) < min(k, n):
        value = lam * scores - (1.0 - lam) * redundancy
        value[~remaining] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        remaining[best] = False
        redundancy = np.maximum(redundancy, sims[best])
    return np.array(chosen, dtype=np.int64)


def collapse_duplicates(order: np.ndarray, vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Drop candidates whose cosine to a better-ranked kept candidate is at least threshold."""
    kept: list[int] = []
    for index in order:
        v = vectors[index]
        if all(float(v @ vectors[j]) < threshold for j in kept):
            kept.append(int(index))
    return np.array(kept, dtype=np.int64)

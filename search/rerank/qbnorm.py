"""Querybank normalisation (QB-Norm): gallery items close to every typical query ("hubs") rank lower.

A bank of typical queries per search direction:
  text→image  a shipped bank of everyday photo captions (xmodal.data querybank_captions.txt, sampled
              from the flickr8k-1k *train* split), embedded by the index's model once and cached on
              disk per model (spec and head content);
  image→text  the index's own photos stand for typical image queries (a query equal to a bank photo
              is left out of its own normalisation, see search.rerank.pipeline). In `xmodal eval`
              those photos are the evaluated queries; the evaluation also reports a bank without them.
Banks are held per direction and keyed by what they depend on: the model for the captions, the
index's image generation for the photos (an update that keeps the row count still moves it).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from xmodal.indexer.cache import cache_dir
from xmodal.indexer.store.index_store import IndexStore, Kind
from xmodal.indexer.store.schema import ImageRow

__all__ = [
    "BANK_LIMIT",
    "QB_NORM_BETA",
    "QueryBanks",
    "querybank_correction",
    "querybank_normalise",
    "text_bank",
]

BANK_LIMIT = 5000

# β per target, chosen out of fold on the 800 flickr8k-1k *train* photos: 150 held out (head trained
# on the other 650) and 5 folds of 130 of those 650 (head trained on the other 520). text→image bank:
# 2000 captions of the head's training photos; image→text bank: the other held-out photos.
# Pooled R@1 change, 4000 caption queries, β 5/10/20/40: +1.0/+1.5/−0.3/−3.2;
# 800 photo queries, β 20/30/40/60/80: +10.0/+11.7/+11.9/+11.7/+11.6.
QB_NORM_BETA: dict[str, float] = {"image": 10.0, "text": 40.0}


def querybank_normalise(scores: np.ndarray, bank_scores: np.ndarray, beta: float) -> np.ndarray:
    """QB-Norm's inverted softmax for one query.

    scores: (c,) query–candidate similarities; bank_scores: (b, c) similarities of a bank of
    typical queries to the same candidates. Every query is normalised: QB-Norm's optional
    activation check cost image→text R@1 out of fold and gave text→image nothing.
    """
    if scores.size == 0 or bank_scores.size == 0:
        return scores
    # exp(β s) / Σ_bank exp(β s_bank) ranks like s − log Σ_bank exp(β s_bank) / β; centring the
    # correction keeps the scores on the cosine scale people read (and --min-score uses).
    correction = querybank_correction(bank_scores, beta)
    return scores - (correction - correction.mean())


def querybank_correction(bank_scores: np.ndarray, beta: float) -> np.ndarray:
    """(c,) log Σ_bank exp(β s_bank) / β per candidate, shifted by the maximum (np.logaddexp.reduce is 10× slower)."""
    x = beta * bank_scores
    top = x.max(axis=0)
    return (top + np.log(np.exp(x - top).sum(axis=0))) / beta


def _caption_bank() -> list[str]:
    from xmodal.data import data_path

    path = data_path("querybank_captions.txt")
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:BANK_LIMIT]


def _cache_file(spec: str, captions: list[str]) -> Path:
    from xmodal.indexer.models.spec import model_fingerprint, parse_model_spec

    key = hashlib.sha256(model_fingerprint(parse_model_spec(spec)).encode())
    key.update("\n".join(captions).encode())
    return cache_dir() / "querybanks" / f"{key.hexdigest()[:24]}.npy"


def text_bank(spec: str, embed_texts: Callable[[list[str]], np.ndarray], dim: int) -> np.ndarray:
    """The caption bank embedded by the model of `spec`; computed once, then read from the cache."""
    captions = _caption_bank()
    if not captions:
        return np.zeros((0, dim), np.float32)
    cache = _cache_file(spec, captions)
    try:
        bank = np.load(cache)
        if bank.shape == (len(captions), dim):
            return bank
    except (OSError, ValueError):
        pass
    bank = embed_texts(captions)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npy")
        np.save(tmp, bank)
        os.replace(tmp, cache)
    except OSError:  # a read-only cache only costs time
        pass
    return bank


def photo_bank(store: IndexStore) -> np.ndarray:
    """Up to BANK_LIMIT of the index's photo vectors (a seeded sample), the image→text bank."""
    ids, vectors = store.metadata.vectors(ImageRow)
    if len(ids) > BANK_LIMIT:
        vectors = vectors[np.random.default_rng(0).choice(len(ids), BANK_LIMIT, replace=False)]
    return vectors


class QueryBanks:
    """The bank of each direction, built on first use and rebuilt only when what it depends on changed."""

    def __init__(self, store: IndexStore, embed_texts: Callable[[list[str]], np.ndarray]) -> None:
        self._store = store
        self._embed_texts = embed_texts
        self._lock = threading.Lock()
        self._banks: dict[Kind, tuple[str, np.ndarray]] = {}  # target -> (key, bank)

    def bank_and_key(self, target: Kind, meta: dict[str, str] | None = None) -> tuple[np.ndarray, str] | None:
        """Typical queries of the other kind for a search of `target` and the key they were built
        for (what they depend on), or None without any. `meta`: the index's facts, when at hand."""
        meta = meta if meta is not None else self._store.metadata.get_meta()
        key = f"captions:{meta.get('model')}" if target == "image" else f"photos:{meta.get('generation:image', '0')}"
        with self._lock:
            held = self._banks.get(target)
            if held is None or held[0] != key:
                if target == "image":
                    bank = text_bank(self._store.model_spec or "", self._embed_texts, self._store.dim or 0)
                else:
                    bank = photo_bank(self._store)
                held = (key, bank)
                self._banks[target] = held
        return (held[1], held[0]) if len(held[1]) else None

    def bank(self, target: Kind) -> np.ndarray | None:
        held = self.bank_and_key(target)
        return held[0] if held is not None else None

"""Banks of typical queries for querybank normalisation (QB-Norm).

text→image: a shipped bank of everyday photo captions (data/querybank_captions.txt, sampled from
the flickr8k-1k *train* split), embedded by the index's model once and cached per model.
image→text: the index's own photos stand for typical image queries (a query equal to a bank photo
is left out of its own normalisation, see SearchEngine._rerank).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from platformdirs import user_cache_dir

from indexer.storage import ImageRow

if TYPE_CHECKING:
    from indexer.models import EmbeddingModel
    from search.engine import SearchEngine

__all__ = ["querybank_vectors", "text_bank", "BANK_LIMIT"]

BANK_LIMIT = 5000


def _caption_bank() -> list[str]:
    from xmodal_data import data_path

    path = data_path("querybank_captions.txt")
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:BANK_LIMIT]


def _cache_file(model: EmbeddingModel, captions: list[str]) -> Path:
    key = hashlib.sha256(str(model.spec).encode())
    if model.spec.head is not None and model.spec.head.is_file():
        key.update(model.spec.head.read_bytes())
    key.update("\n".join(captions).encode())
    folder = Path(os.environ.get("XMODAL_CACHE", user_cache_dir("xmodal")))
    return folder / "querybanks" / f"{key.hexdigest()[:24]}.npy"


def text_bank(model: EmbeddingModel) -> np.ndarray:
    """The caption bank embedded by this model; computed once, then read from the cache."""
    captions = _caption_bank()
    if not captions:
        return np.zeros((0, model.dim), np.float32)
    cache = _cache_file(model, captions)
    try:
        bank = np.load(cache)
        if bank.shape == (len(captions), model.dim):
            return bank
    except (OSError, ValueError):
        pass
    bank = model.embed_texts(captions)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, bank)
        os.replace(tmp, cache)
    except OSError:  # a read-only cache only costs time
        pass
    return bank


def querybank_vectors(engine: SearchEngine, target: str) -> np.ndarray | None:
    if target == "image":
        return text_bank(engine.model)
    ids, vectors = engine.store.metadata.vectors(ImageRow)
    if len(ids) > BANK_LIMIT:
        vectors = vectors[np.random.default_rng(0).choice(len(ids), BANK_LIMIT, replace=False)]
    return vectors if len(vectors) else None

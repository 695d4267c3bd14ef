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
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from platformdirs import user_cache_dir

from xmodal.indexer.store.schema import ImageRow

if TYPE_CHECKING:
    from xmodal.search.engine import SearchEngine

__all__ = ["querybank_vectors", "text_bank", "BANK_LIMIT"]

BANK_LIMIT = 5000


def _caption_bank() -> list[str]:
    from xmodal.data import data_path

    path = data_path("querybank_captions.txt")
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:BANK_LIMIT]


def _cache_file(spec: str, captions: list[str]) -> Path:
    from xmodal.indexer.models.spec import parse_model_spec

    key = hashlib.sha256(spec.encode())
    head = parse_model_spec(spec).head
    if head is not None and head.is_file():
        key.update(head.read_bytes())
    elif parse_model_spec(spec).is_offline_default:
        from xmodal.data import data_path

        shipped = data_path("offline_head.pt")
        if shipped.is_file():
            key.update(shipped.read_bytes())
    key.update("\n".join(captions).encode())
    folder = Path(os.environ.get("XMODAL_CACHE", user_cache_dir("xmodal")))
    return folder / "querybanks" / f"{key.hexdigest()[:24]}.npy"


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
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, bank)
        os.replace(tmp, cache)
    except OSError:  # a read-only cache only costs time
        pass
    return bank


def querybank_vectors(engine: SearchEngine, target: str) -> np.ndarray | None:
    if target == "image":
        return text_bank(engine.store.model_spec or "", engine.embed_texts, engine.store.dim or 0)
    ids, vectors = engine.store.metadata.vectors(ImageRow)
    if len(ids) > BANK_LIMIT:
        vectors = vectors[np.random.default_rng(0).choice(len(ids), BANK_LIMIT, replace=False)]
    return vectors if len(vectors) else None

"""Banks of typical queries for querybank normalisation (QB-Norm).

text→image: a shipped bank of everyday photo captions (data/querybank_captions.txt, sampled from
the flickr8k-1k *train* split), embedded by the index's model on first use.
image→text: the index's own photos stand for typical image queries (a query equal to a bank photo
is left out of its own normalisation, see SearchEngine._rerank).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from indexer.storage import ImageRow

if TYPE_CHECKING:
    from search.engine import SearchEngine

__all__ = ["querybank_vectors", "BANK_LIMIT"]

BANK_LIMIT = 5000
_TEXT_BANKS: dict[str, np.ndarray] = {}


def _caption_bank() -> list[str]:
    from xmodal_data import data_path

    path = data_path("querybank_captions.txt")
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:BANK_LIMIT]


def querybank_vectors(engine: SearchEngine, target: str) -> np.ndarray | None:
    if target == "image":
        model = engine.model
        key = str(model.spec)
        if key not in _TEXT_BANKS:
            captions = _caption_bank()
            _TEXT_BANKS[key] = model.embed_texts(captions) if captions else np.zeros((0, model.dim), np.float32)
        return _TEXT_BANKS[key]
    ids, vectors = engine.store.metadata.vectors(ImageRow)
    if len(ids) > BANK_LIMIT:
        vectors = vectors[np.random.default_rng(0).choice(len(ids), BANK_LIMIT, replace=False)]
    return vectors if len(vectors) else None

"""`xmodal eval`: recall@K of text→image and image→text retrieval on captioned photos."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from xmodal.indexer.indexing import Indexer
from xmodal.indexer.models.embedding import EmbeddingModel
from xmodal.indexer.pairs import CaptionedImage
from xmodal.indexer.store.schema import ImageRow, TextRow
from xmodal.indexer.text_indexing import TextIndexer
from xmodal.search.engine import SearchEngine

__all__ = ["EvalResult", "recall_at_k", "evaluate_pairs"]

KS = (1, 5, 10)


@dataclass
class EvalResult:
    text_to_image: dict[str, float]
    image_to_text: dict[str, float]
    images: int
    captions: int
    ms_per_query: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"text_to_image": self.text_to_image, "image_to_text": self.image_to_text, "images": self.images, "captions": self.captions}


def recall_at_k(ranked: np.ndarray, relevant: Sequence[set[int]], ks: Sequence[int] = KS) -> dict[str, float]:
    """Percentage of queries with at least one relevant id among their first k ranked ids."""
    out = {}
    for k in ks:
        top = ranked[:, :k]
        hits = sum(1 for row, rel in zip(top, relevant) if rel.intersection(row.tolist()))
        out[f"recall@{k}"] = round(100.0 * hits / max(1, len(relevant)), 2)
    return out


def evaluate_pairs(pairs: Sequence[CaptionedImage], model: EmbeddingModel, rerank: bool = True, ks: Sequence[int] = KS) -> EvalResult:
    """Index the pairs' photos and captions in a temporary index and measure recall@K both ways.

    All photos are the pool for text→image (the caption's own photo is relevant); all captions are
    the pool for image→text (any caption of the photo is relevant).
    """
    depth = max(ks)
    with tempfile.TemporaryDirectory(prefix="xmodal-eval-") as tmp:
        images = [os.path.abspath(p.image) for p in pairs]
        Indexer(tmp, model=model).add_paths(images)
        TextIndexer(tmp, model=model).add_texts([(image, c) for image, p in zip(images, pairs) for c in p.captions])
        engine = SearchEngine.open(tmp, model=model)
        try:
            store = engine.store
            image_ids, _ = store.metadata.vectors(ImageRow)
            text_ids, text_vecs = store.metadata.vectors(TextRow)
            with store.metadata.session() as s:
                path_of = dict(s.query(ImageRow.id, ImageRow.path).all())
                source_of = dict(s.query(TextRow.id, TextRow.source).all())
            image_id_of_path = {path: i for i, path in path_of.items()}
            _, image_vecs = store.metadata.vectors(ImageRow)

            clock = time.perf_counter()
            t2i = engine.search_vectors(text_vecs, depth, target="image", rerank=rerank, query_kind="text")[1]
            t2i_ms = 1000 * (time.perf_counter() - clock) / max(1, len(text_vecs))
            relevant_t2i = [{image_id_of_path[source_of[int(t)]]} for t in text_ids]

            clock = time.perf_counter()
            i2t = engine.search_vectors(image_vecs, depth, target="text", rerank=rerank, query_kind="image")[1]
            i2t_ms = 1000 * (time.perf_counter() - clock) / max(1, len(image_vecs))
            captions_of: dict[str, set[int]] = {}
            for t, source in source_of.items():
                captions_of.setdefault(source, set()).add(int(t))
            relevant_i2t = [captions_of.get(path_of[int(i)], set()) for i in image_ids]
        finally:
            engine.close()
    return EvalResult(
        text_to_image=recall_at_k(t2i, relevant_t2i, ks),
        image_to_text=recall_at_k(i2t, relevant_i2t, ks),
        images=len(image_ids),
        captions=len(text_ids),
        ms_per_query={"text_to_image": round(t2i_ms, 3), "image_to_text": round(i2t_ms, 3)},
    )

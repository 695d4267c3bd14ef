"""`xmodal eval`: recall@K of text→image and image→text retrieval on captioned photos.

QB-Norm's bank policy (search.rerank.qbnorm), stated in every result:
  text→image  the shipped caption bank (flickr8k-1k *train* captions): never an evaluated query;
  image→text  the index's own photos, which here are the evaluated queries (each query left out of
              its own bank): transductive. Reported beside it: `image_to_text_held_out`, where the
              photos are split into folds and each fold's queries are normalised with a bank of the
              other folds' photos only, so no query is ever in its own bank.
"""

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

__all__ = ["BANK_POLICY", "EvalResult", "evaluate_pairs", "recall_at_k"]

KS = (1, 5, 10)
HELD_OUT_FOLDS = 5
BANK_POLICY = {
    "text_to_image": "shipped caption bank (flickr8k-1k train captions), no evaluated query in it",
    "image_to_text": "the evaluated photos themselves, each query left out of its own bank (transductive)",
    "image_to_text_held_out": f"{HELD_OUT_FOLDS} folds of the evaluated photos; "
    "a fold's queries use a bank of the other folds' photos",
}


@dataclass
class EvalResult:
    text_to_image: dict[str, float]
    image_to_text: dict[str, float]
    images: int
    captions: int
    ms_per_query: dict[str, float] = field(default_factory=dict)
    image_to_text_held_out: dict[str, float] | None = None  # None without reranking (no bank involved)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (photo, reason): not decodable, left out

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "text_to_image": self.text_to_image,
            "image_to_text": self.image_to_text,
            "images": self.images,
            "captions": self.captions,
        }
        if self.image_to_text_held_out is not None:
            out["image_to_text_held_out"] = self.image_to_text_held_out
            out["qbnorm_bank"] = BANK_POLICY
        if self.skipped:
            out["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return out


def recall_at_k(ranked: np.ndarray, relevant: Sequence[set[int]], ks: Sequence[int] = KS) -> dict[str, float]:
    """Percentage of queries with at least one relevant id among their first k ranked ids."""
    out = {}
    for k in ks:
        top = ranked[:, :k]
        hits = sum(1 for row, rel in zip(top, relevant) if rel.intersection(row.tolist()))
        out[f"recall@{k}"] = round(100.0 * hits / max(1, len(relevant)), 2)
    return out


def _held_out_i2t(engine: SearchEngine, image_vecs: np.ndarray, depth: int, folds: int) -> np.ndarray:
    """image→text rankings where each query's QB-Norm bank holds only photos of other folds."""
    ranked = np.full((len(image_vecs), depth), -1, dtype=np.int64)
    fold_of = np.random.default_rng(0).permutation(len(image_vecs)) % max(1, min(folds, len(image_vecs)))
    for fold in np.unique(fold_of):
        rows = np.nonzero(fold_of == fold)[0]
        bank = image_vecs[fold_of != fold]
        ranked[rows] = engine.search_vectors(
            image_vecs[rows], depth, target="text", query_kind="image", bank=bank if len(bank) else None
        )[1]
    return ranked


def evaluate_pairs(
    pairs: Sequence[CaptionedImage], model: EmbeddingModel, rerank: bool = True, ks: Sequence[int] = KS
) -> EvalResult:
    """Index the pairs' photos and captions in a temporary index and measure recall@K both ways.

    All photos are the pool for text→image (the caption's own photo is relevant); all captions are
    the pool for image→text (any caption of the photo is relevant). A photo that cannot be decoded
    is left out with its captions and reported in `skipped`.
    """
    depth = max(ks)
    with tempfile.TemporaryDirectory(prefix="xmodal-eval-") as tmp:
        images = [os.path.abspath(p.image) for p in pairs]
        summary = Indexer(tmp, model=model).add_paths(images)
        failed = dict(summary.failures)
        TextIndexer(tmp, model=model).add_texts(
            [(image, c) for image, p in zip(images, pairs) if image not in failed for c in p.captions]
        )
        engine = SearchEngine.open(tmp, model=model)
        try:
            store = engine.store
            image_ids, image_vecs = store.metadata.vectors(ImageRow)
            text_ids, text_vecs = store.metadata.vectors(TextRow)
            with store.metadata.session() as s:
                path_of = dict(s.query(ImageRow.id, ImageRow.path).all())
                source_of = dict(s.query(TextRow.id, TextRow.source).all())
            image_id_of_path = {path: i for i, path in path_of.items()}

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
            held_out = _held_out_i2t(engine, image_vecs, depth, HELD_OUT_FOLDS) if rerank else None
        finally:
            engine.close()
    return EvalResult(
        text_to_image=recall_at_k(t2i, relevant_t2i, ks),
        image_to_text=recall_at_k(i2t, relevant_i2t, ks),
        images=len(image_ids),
        captions=len(text_ids),
        ms_per_query={"text_to_image": round(t2i_ms, 3), "image_to_text": round(i2t_ms, 3)},
        image_to_text_held_out=recall_at_k(held_out, relevant_i2t, ks) if held_out is not None else None,
        skipped=sorted(failed.items()),
    )

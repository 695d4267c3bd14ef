"""One-time preparations an index needs, made while the indexing run has the model loaded.

A search from a fresh process should not load torch: it runs the model's exported query encoders
(onnxruntime) and reads the caption bank that QB-Norm normalises against. Both are made here, once
per model and machine, by the `Indexer` itself, so an index built through the library searches as
fast as one built by the CLI. Each step reports (stage, done, total) so that a caller can draw it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from xmodal.indexer.models.deferred import exported_image_encoder
from xmodal.indexer.models.query_encoders import (
    QueryTextEncoder,
    export_image_encoder,
    prepare_query_encoders,
    sidecar_path,
)

if TYPE_CHECKING:
    from xmodal.indexer.models.embedding import EmbeddingModel

__all__ = ["StageProgress", "prepare_for_search", "shipped_bank", "with_exported_image_path", "BANK_STAGE"]

StageProgress = Callable[[str, int, int], None]
BANK_STAGE = "embedding the query bank"
_BANK_CHUNK = 64  # captions per progress step: ~1 s each for a ViT-B text tower on two cores


def _quiet(stage: str, done: int, total: int) -> None:
    return None


def prepare_for_search(model: EmbeddingModel, on_progress: StageProgress | None = None) -> None:
    """Export the query encoders and embed the caption bank, when they are not made yet."""
    report = on_progress or _quiet
    prepare_query_encoders(model, report)
    # The bank lives with the second stage (search.rerank), which owns its cache key; imported here,
    # at run time, because the index run is where the model is loaded.
    from xmodal.search.rerank.qbnorm import text_bank

    def embed_with_progress(captions: list[str]) -> np.ndarray:
        """Called only when the bank is not cached: the model's shipped bank when it has one for
        these captions, else through the exported encoder (onnxruntime is faster than torch on the
        CPU), in steps that report progress."""
        shipped = shipped_bank(model, captions)
        if shipped is not None:
            return shipped
        encoder = QueryTextEncoder.for_index(str(model.spec))
        embed = encoder.embed_texts if encoder is not None else model.embed_texts
        chunks = []
        report(BANK_STAGE, 0, len(captions))
        for start in range(0, len(captions), _BANK_CHUNK):
            chunks.append(embed(captions[start : start + _BANK_CHUNK]))
            report(BANK_STAGE, min(start + _BANK_CHUNK, len(captions)), len(captions))
        return np.concatenate(chunks) if chunks else np.zeros((0, model.dim), np.float32)

    text_bank(str(model.spec), embed_with_progress, model.dim)


def shipped_bank(model: EmbeddingModel, captions: list[str]) -> np.ndarray | None:
    """The caption bank shipped with the model's ONNX files (training/export_offline_onnx.py), if it
    holds exactly these captions; None otherwise (then it is embedded here)."""
    sidecar = model.spec.shipped_sidecar("text")
    if sidecar is None:
        return None
    try:
        described = json.loads(sidecar.read_text(encoding="utf-8")).get("querybank")
        if not described or described["captions_sha256"] != hashlib.sha256("\n".join(captions).encode()).hexdigest():
            return None
        bank = np.load(sidecar.parent / described["file"])
    except (OSError, ValueError, KeyError):
        return None
    return bank if bank.shape == (len(captions), model.dim) and bank.dtype == np.float32 else None


def with_exported_image_path(model: EmbeddingModel, on_progress: StageProgress | None = None) -> EmbeddingModel:
    """The model as an indexing run on the CPU uses it: embedding photos with its image path
    exported to onnxruntime (exported first when missing), the same vectors (and tower features,
    where the index keeps them) without PyTorch's per-call overhead; later runs then need not load
    the PyTorch model at all (indexer.models.deferred). Else the model itself."""
    if model.uses_exported_image_path or model.device != "cpu" or os.environ.get("XMODAL_NO_ONNX") == "1":
        return model
    report = on_progress or _quiet
    stage = "exporting the image encoder"
    fresh = not sidecar_path(str(model.spec), "image").is_file()
    if fresh:
        report(stage, 0, 1)
    sidecar = export_image_encoder(model)
    if fresh:
        report(stage, 1, 1)
    if sidecar is None:
        return model
    encoder = exported_image_encoder(model.spec)
    if encoder is None or (model.keeps_tower_features and not encoder.gives_tower_features):
        return model
    return model.with_exported_image_path(encoder.embed_pixels_for_index)

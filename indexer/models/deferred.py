"""An OpenCLIP model for indexing photos when its image path is already exported.

Loading a ViT's PyTorch weights takes seconds, often more than embedding the new photos of a run.
Once the image path has been exported to onnxruntime (the first run does it), photos need nothing
else; the PyTorch model is loaded only if something more is asked of it (texts, a new export).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from xmodal.indexer.models.embedding import Device, EmbeddingModel, Towers, load_model, resolve_device
from xmodal.indexer.models.preprocess import Preprocessing
from xmodal.indexer.models.query_encoders import QueryImageEncoder
from xmodal.indexer.models.spec import ModelSpec, parse_model_spec

__all__ = ["DeferredTowers", "load_for_indexing"]


class DeferredTowers:
    """Towers whose PyTorch model is loaded on first use; what indexing needs is known without it."""

    def __init__(self, spec: ModelSpec, preprocessing: Preprocessing, dim: int) -> None:
        self._spec = spec
        self.preprocessing = preprocessing
        self.image_dim = self.text_dim = dim
        self._towers: Towers | None = None
        self._lock = threading.Lock()

    @property
    def is_loaded(self) -> bool:
        return self._towers is not None

    def loaded(self) -> Towers:
        with self._lock:
            if self._towers is None:
                self._towers = load_model(self._spec, "cpu").towers
            return self._towers

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self.preprocessing.transform()

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.loaded().image_features(pixels)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        return self.loaded().text_features(texts)

    def __getattr__(self, name: str) -> Any:
        # Anything else (the open_clip module itself, for a new export or the logit scale) is the
        # loaded model's.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.loaded(), name)


def exported_image_encoder(spec: str) -> QueryImageEncoder | None:
    """The model's exported image path for indexing on this machine's CPU (all its cores), if made."""
    if os.environ.get("XMODAL_NO_ONNX") == "1":
        return None
    return QueryImageEncoder.for_index(spec, threads=os.cpu_count() or 1, device="cpu")


def load_for_indexing(spec: str | ModelSpec | None, device: Device = "auto") -> EmbeddingModel:
    """The model as an indexing run needs it: an OpenCLIP model without a head of ours, on the CPU,
    with its image path exported, embeds photos through onnxruntime without loading PyTorch weights;
    anything else is `load_model`'s."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    if resolve_device(device) != "cpu" or parsed.capabilities.towers == "offline" or parsed.head is not None:
        return load_model(parsed, device)
    encoder = exported_image_encoder(str(parsed))
    if encoder is None:
        return load_model(parsed, device)
    size = encoder.preprocessing.size
    dim = int(encoder.embed_pixels(np.zeros((1, 3, size, size), np.float32)).shape[1])
    model = EmbeddingModel(parsed, DeferredTowers(parsed, encoder.preprocessing, dim), None, "cpu")
    model.use_exported_image_path(encoder.embed_pixels)
    return model

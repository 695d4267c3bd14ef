"""A model for indexing photos when its image path is already exported.

Loading a model takes seconds (a ViT's weights; the offline default's imports of timm, open_clip
and transformers; torch itself and torchvision, over two seconds here), often more than embedding
the new photos of a run. Once the image path has been exported to onnxruntime (the first run does
it), photos need nothing else: Pillow and NumPy preprocess them (Preprocessing.split_numpy) and
torch is not imported. The PyTorch model and its head are loaded only if something more is asked
of them (texts, a new export).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from PIL import Image

from xmodal.indexer.accelerators import default_threads
from xmodal.indexer.models import embedding
from xmodal.indexer.models.embedding import Device, EmbeddingModel, Towers, load_head, resolve_device
from xmodal.indexer.models.preprocess import Preprocessing
from xmodal.indexer.models.query_encoders import QueryImageEncoder, sidecar_path
from xmodal.indexer.models.spec import ModelSpec, parse_model_spec

if TYPE_CHECKING:
    import torch

    from xmodal.indexer.models.head import ProjectionHead

__all__ = ["DeferredHead", "DeferredTowers", "exported_image_encoder", "load_for_indexing"]


class DeferredTowers:
    """Towers whose PyTorch model is loaded on first use; what indexing needs is known without it."""

    def __init__(self, spec: ModelSpec, preprocessing: Preprocessing, image_dim: int) -> None:
        self._spec = spec
        self.preprocessing = preprocessing
        self.image_dim = image_dim
        self._towers: Towers | None = None
        self._lock = threading.Lock()

    @property
    def text_dim(self) -> int:
        return self.loaded().text_dim

    @property
    def is_loaded(self) -> bool:
        return self._towers is not None

    def loaded(self) -> Towers:
        with self._lock:
            if self._towers is None:
                self._towers = embedding.load_model(self._spec, "cpu").towers
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


class DeferredHead:
    """The projection head, read on first use; its output size is known from the export."""

    def __init__(self, paths: tuple[Path, ...], embed_dim: int) -> None:
        self._paths = paths
        self.embed_dim = embed_dim
        self._head: ProjectionHead | None = None
        self._lock = threading.Lock()

    def loaded(self) -> ProjectionHead:
        with self._lock:
            if self._head is None:
                self._head = load_head(self._paths, "cpu")
            return self._head

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.loaded(), name)


_ENCODERS: dict[tuple[str, int], QueryImageEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def exported_image_encoder(spec: ModelSpec) -> QueryImageEncoder | None:
    """The model's exported image path for indexing on this machine's CPU, if made. One session per
    export and process (read-only and thread-safe, like load_model's models): a watcher's runs and
    the runs of one Indexer share it warm."""
    if os.environ.get("XMODAL_NO_ONNX") == "1":
        return None
    # A ViT costs several times the decoding of a photo: all cores. The offline default's network
    # is cheap next to decoding, which needs the other cores (see onnx_backbone.default_threads).
    threads = default_threads() if spec.capabilities.tower_features else (os.cpu_count() or 1)
    key = (str(sidecar_path(str(spec), "image")), threads)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            encoder = QueryImageEncoder.for_index(str(spec), threads=threads, device="cpu")
            if encoder is None:
                return None
            _ENCODERS[key] = encoder
        return _ENCODERS[key]


def load_for_indexing(spec: str | ModelSpec | None, device: Device = "auto") -> EmbeddingModel:
    """The model as an indexing run needs it. On the CPU, once its image path is exported (with the
    tower features where the index keeps them), photos go through onnxruntime and only the small
    projection head is loaded; anything else is `load_model`'s."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    if resolve_device(device) != "cpu":
        return embedding.load_model(parsed, device)
    encoder = exported_image_encoder(parsed)
    if encoder is None or (parsed.capabilities.tower_features and not encoder.gives_tower_features):
        return embedding.load_model(parsed, device)
    size = encoder.preprocessing.size
    probe = encoder.embed_pixels_for_index(np.zeros((1, 3, size, size), np.float32))
    image_dim = probe.tower_features.shape[1] if probe.tower_features is not None else probe.vectors.shape[1]
    head_files = parsed.head_files
    head = DeferredHead(head_files, probe.vectors.shape[1]) if head_files else None
    towers = DeferredTowers(parsed, encoder.preprocessing, image_dim)
    # The deferred head stands in for a ProjectionHead: whatever it is asked beyond its size loads it.
    model = EmbeddingModel(parsed, towers, cast("ProjectionHead | None", head), "cpu")
    return model.with_exported_image_path(encoder.embed_pixels_for_index)

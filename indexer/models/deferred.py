"""A model run from its exported paths: for indexing photos once the image path is exported, and the
offline default's shipped files (xmodal.data) on the core install, which has no torch at all.

Loading a model takes seconds (a ViT's weights; the offline default's imports of timm, open_clip
and transformers; torch itself and torchvision, over two seconds here), often more than embedding
the new photos of a run. Once the image path has been exported to onnxruntime (the first run does
it), photos need nothing else: Pillow and NumPy preprocess them (Preprocessing.split_numpy) and
torch is not imported. The PyTorch model and its head are loaded only if something more is asked
of them (texts without an export, a new export, training).
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
from xmodal.indexer.errors import MissingExtraError
from xmodal.indexer.extras import installed
from xmodal.indexer.models import embedding
from xmodal.indexer.models.embedding import Device, EmbeddingModel, Towers, load_head, resolve_device
from xmodal.indexer.models.preprocess import Preprocessing
from xmodal.indexer.models.query_encoders import QueryImageEncoder, QueryTextEncoder, sidecar_path
from xmodal.indexer.models.spec import ModelSpec, parse_model_spec

if TYPE_CHECKING:
    import torch

    from xmodal.indexer.models.head import ProjectionHead

__all__ = [
    "DeferredHead",
    "DeferredTowers",
    "LazyTextPath",
    "exported_image_encoder",
    "load_for_indexing",
    "load_shipped",
]


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
                towers = embedding.load_model(self._spec, "cpu").towers
                if isinstance(towers, DeferredTowers):  # the core install: the shipped files are all there is
                    raise MissingExtraError(f"the PyTorch towers of {self._spec.name} need", "train")
                self._towers = towers
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

    def __init__(self, paths: tuple[Path, ...], embed_dim: int, logit_scale: float | None = None) -> None:
        self._paths = paths
        self.embed_dim = embed_dim
        self.known_logit_scale = logit_scale  # from the export's description: no need to load the head for it
        self._head: ProjectionHead | None = None
        self._lock = threading.Lock()

    def loaded(self) -> ProjectionHead:
        with self._lock:
            if self._head is None:
                if not installed(("torch",)):
                    raise MissingExtraError("the PyTorch projection head needs", "train")
                self._head = load_head(self._paths, "cpu")
            return self._head

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.loaded(), name)


class LazyTextPath:
    """An exported text path whose onnxruntime session (half a second for MiniLM) is opened on the
    first texts: an indexing run of photos never pays for it."""

    def __init__(self, sidecar: Path, device: str = "auto") -> None:
        self._sidecar = sidecar
        self._device = device
        self._encoder: QueryTextEncoder | None = None
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            if self._encoder is None:
                self._encoder = QueryTextEncoder(self._sidecar, device=self._device)
        return self._encoder.embed_texts(texts)


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


def _from_exports(
    spec: ModelSpec, image: QueryImageEncoder, text: LazyTextPath | None, device: str = "cpu"
) -> EmbeddingModel:
    """The model whose photos (and texts, given `text`) go through onnxruntime; the PyTorch towers
    and head stand behind deferred stand-ins, loaded only if something more is asked of them."""
    size = image.preprocessing.size
    probe = image.embed_pixels_for_index(np.zeros((1, 3, size, size), np.float32))
    image_dim = probe.tower_features.shape[1] if probe.tower_features is not None else probe.vectors.shape[1]
    head_files = spec.head_files
    scale = image.description.get("logit_scale")
    head = DeferredHead(head_files, probe.vectors.shape[1], scale) if head_files else None
    towers = DeferredTowers(spec, image.preprocessing, image_dim)
    # The deferred head stands in for a ProjectionHead: whatever it is asked beyond its size loads it.
    model = EmbeddingModel(spec, towers, cast("ProjectionHead | None", head), device)
    model = model.with_exported_image_path(image.embed_pixels_for_index)
    return model.with_exported_text_path(text) if text is not None else model


def load_shipped(spec: ModelSpec, device: str = "cpu") -> EmbeddingModel | None:
    """The model run from the ONNX files shipped with xmodal alone (no torch), or None when it ships
    none. On "cuda" onnxruntime's CUDA provider runs them where installed (onnxruntime-gpu)."""
    image_sidecar, text_sidecar = spec.shipped_sidecar("image"), spec.shipped_sidecar("text")
    if image_sidecar is None or text_sidecar is None:
        return None
    providers = "cpu" if device == "cpu" else "auto"
    shared = exported_image_encoder(spec) if device == "cpu" else None  # the indexing runs' warm session
    image = shared or QueryImageEncoder(image_sidecar, threads=default_threads(), device=providers)
    return _from_exports(spec, image, LazyTextPath(text_sidecar, providers), device)


def load_for_indexing(spec: str | ModelSpec | None, device: Device = "auto") -> EmbeddingModel:
    """The model as an indexing run needs it. On the CPU, once its image path is exported (with the
    tower features where the index keeps them), photos go through onnxruntime and only the small
    projection head is loaded; texts too when their path is exported; anything else is `load_model`'s."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    if resolve_device(device) != "cpu":
        return embedding.load_model(parsed, device)
    encoder = exported_image_encoder(parsed)
    if encoder is None or (parsed.capabilities.tower_features and not encoder.gives_tower_features):
        return embedding.load_model(parsed, device)
    text_sidecar = sidecar_path(str(parsed), "text")
    return _from_exports(parsed, encoder, LazyTextPath(text_sidecar, "cpu") if text_sidecar.is_file() else None)

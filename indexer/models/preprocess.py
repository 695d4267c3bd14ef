"""A model's image preprocessing, defined once as data and run three ways.

`Preprocessing` holds what a model expects (input size, resampling, mean and std); from it come
  transform()   the torchvision transform the model's own process runs (indexing, `embed_images`);
  split()       the same transform split for decode workers: they stop at the resized, cropped uint8
                pixels (150 KB for a 224-px image, where the float tensor is 600 KB) and the model's
                process converts whole batches (ToTensor, Normalize), which gives the same tensor;
  pixels()      the same steps with Pillow and NumPy only, for the exported ONNX query encoders (a
                search that does not import torch).
Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

__all__ = ["OFFLINE_PREPROCESSING", "Preprocessing", "SplitTransform", "split_transform"]


def _rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


@dataclass(frozen=True)
class Preprocessing:
    """Short side resized to `size`, centre crop `size`×`size`, scaled to [0, 1], normalised."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"

    @classmethod
    def from_open_clip(cls, cfg: Any) -> Preprocessing:
        """From an open_clip model's `visual.preprocess_cfg` (open_clip runs its own transform; this
        carries its facts, e.g. the size decode workers reduce photos to)."""
        size = cfg.get("size", 224) if isinstance(cfg, dict) else getattr(cfg, "size", 224)
        get = (lambda k, d: cfg.get(k, d)) if isinstance(cfg, dict) else (lambda k, d: getattr(cfg, k, d))
        side = int(max(size)) if isinstance(size, (tuple, list)) else int(size)
        mean = tuple(float(x) for x in get("mean", (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(float(x) for x in get("std", (0.26862954, 0.26130258, 0.27577711)))
        interpolation = "bilinear" if get("interpolation", "bicubic") == "bilinear" else "bicubic"
        return cls(side, mean, std, interpolation)  # type: ignore[arg-type]

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image → (3, size, size) float tensor (torchvision; picklable for worker processes)."""
        from torchvision import transforms as T

        mode = T.InterpolationMode.BILINEAR if self.interpolation == "bilinear" else T.InterpolationMode.BICUBIC
        return T.Compose(
            [
                T.Lambda(_rgb),
                T.Resize(self.size, interpolation=mode),
                T.CenterCrop(self.size),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def pixels(self, image: Image.Image) -> np.ndarray:
        """transform() with Pillow and NumPy: a (3, size, size) float32 array (torchvision's Resize
        and CenterCrop arithmetic on a PIL image)."""
        from xmodal.indexer.images import to_rgb

        image = to_rgb(image)
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        size = (new_short, new_long) if width <= height else (new_long, new_short)
        resample = Image.Resampling.BILINEAR if self.interpolation == "bilinear" else Image.Resampling.BICUBIC
        if size != image.size:
            image = image.resize(size, resample)
        left = int(round((size[0] - self.size) / 2.0))
        top = int(round((size[1] - self.size) / 2.0))
        image = image.crop((left, top, left + self.size, top + self.size))
        array = np.asarray(image, dtype=np.float32) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((array - mean) / std).transpose(2, 0, 1).copy()


# The offline default (EfficientNet-Lite0): TF-style scaling to [-1, 1] beat ImageNet mean/std for
# these weights on held-out train photos.
OFFLINE_PREPROCESSING = Preprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")


@dataclass(frozen=True)
class SplitTransform:
    """`per_image` runs in decode workers and returns a uint8 HWC array or a finished tensor;
    `per_batch` turns a list of those into the model's input batch."""

    image_steps: Callable[[Image.Image], object]
    tensor_steps: Sequence[Callable[[torch.Tensor], torch.Tensor]]
    splits: bool

    def per_image(self, image: Image.Image) -> np.ndarray | torch.Tensor:
        out = self.image_steps(image)
        if not self.splits:
            return out  # type: ignore[return-value]
        if not isinstance(out, Image.Image):
            raise TypeError(f"expected a PIL image before ToTensor, got {type(out).__name__}")
        return np.asarray(out.convert("RGB"), dtype=np.uint8)

    def per_batch(self, items: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
        import torch

        if not self.splits:
            return torch.stack(list(items))  # type: ignore[arg-type]
        batch = torch.from_numpy(np.stack(items)).permute(0, 3, 1, 2).float().div_(255.0)  # type: ignore[arg-type]
        for step in self.tensor_steps:
            batch = step(batch)
        return batch


def split_transform(transform: Callable[[Image.Image], torch.Tensor]) -> SplitTransform:
    """Split a torchvision Compose at its ToTensor; anything else runs whole in the workers."""
    if not type(transform).__module__.startswith("torchvision"):
        return SplitTransform(transform, (), splits=False)  # and torchvision's import is skipped
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    cut = next((i for i, step in enumerate(steps) if isinstance(step, T.ToTensor)), None)
    rest = steps[cut + 1 :] if cut is not None else []
    # Only steps known to act on a batch the way they act on one image may move to the batch side.
    if cut is None or not all(isinstance(step, T.Normalize) for step in rest):
        return SplitTransform(transform, (), splits=False)
    return SplitTransform(T.Compose(steps[:cut]), tuple(rest), splits=True)

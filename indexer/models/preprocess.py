"""A model's image preprocessing, defined once as data and run three ways.

`Preprocessing` holds what a model expects (input size, resampling, mean and std); from it come
  transform()   the torchvision transform the model's own process runs (indexing, `embed_images`);
  split()       the same transform split for decode workers: they stop at the resized, cropped uint8
                pixels (150 KB for a 224-px image, where the float tensor is 600 KB) and the model's
                process converts whole batches (ToTensor, Normalize), which gives the same tensor;
  pixels()      the same steps with Pillow and NumPy only, for the exported ONNX query encoders (a
                search that does not import torch);
  split_numpy() pixels() split the same way, for an indexing run whose image path is exported: decode
                workers and the batch side then need neither torch nor torchvision.
Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

__all__ = ["OFFLINE_PREPROCESSING", "NumpySplit", "PixelSplit", "Preprocessing", "SplitTransform", "split_transform"]


def _rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


ResizeMode = Literal["shortest", "squash"]


@dataclass(frozen=True)
class Preprocessing:
    """Short side resized to `size` and a centre crop `size`×`size` (resize_mode "squash": both
    sides resized to `size`, as open_clip's SigLIP models), scaled to [0, 1], normalised."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    resize_mode: ResizeMode = "shortest"

    @classmethod
    def from_open_clip(cls, cfg: Any) -> Preprocessing | None:
        """From an open_clip model's `visual.preprocess_cfg` (open_clip runs its own transform; this
        carries its facts, e.g. the size decode workers reduce photos to). None for a resize mode
        not described here ("longest" pads): such a model runs only its own transform."""
        size = cfg.get("size", 224) if isinstance(cfg, dict) else getattr(cfg, "size", 224)
        get = (lambda k, d: cfg.get(k, d)) if isinstance(cfg, dict) else (lambda k, d: getattr(cfg, k, d))
        resize_mode = get("resize_mode", "shortest") or "shortest"
        if resize_mode not in ("shortest", "squash"):
            return None
        side = int(max(size)) if isinstance(size, (tuple, list)) else int(size)
        mean = tuple(float(x) for x in get("mean", (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(float(x) for x in get("std", (0.26862954, 0.26130258, 0.27577711)))
        interpolation = "bilinear" if get("interpolation", "bicubic") == "bilinear" else "bicubic"
        return cls(side, mean, std, interpolation, resize_mode)  # type: ignore[arg-type]

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image → (3, size, size) float tensor (torchvision; picklable for worker processes)."""
        from torchvision import transforms as T

        mode = T.InterpolationMode.BILINEAR if self.interpolation == "bilinear" else T.InterpolationMode.BICUBIC
        resize = T.Resize((self.size, self.size) if self.resize_mode == "squash" else self.size, interpolation=mode)
        return T.Compose(
            [T.Lambda(_rgb), resize, T.CenterCrop(self.size), T.ToTensor(), T.Normalize(self.mean, self.std)]
        )

    def cropped(self, image: Image.Image) -> np.ndarray:
        """The resized, centre-cropped RGB pixels: (size, size, 3) uint8 (torchvision's Resize and
        CenterCrop arithmetic on a PIL image)."""
        from xmodal.indexer.images import to_rgb

        image = to_rgb(image)
        width, height = image.size
        if self.resize_mode == "squash":
            size = (self.size, self.size)
        else:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.size, int(self.size * long / short)
            size = (new_short, new_long) if width <= height else (new_long, new_short)
        resample = Image.Resampling.BILINEAR if self.interpolation == "bilinear" else Image.Resampling.BICUBIC
        if size != image.size:
            image = image.resize(size, resample)
        left = int(round((size[0] - self.size) / 2.0))
        top = int(round((size[1] - self.size) / 2.0))
        return np.asarray(image.crop((left, top, left + self.size, top + self.size)), dtype=np.uint8)

    def normalised(self, cropped: np.ndarray) -> np.ndarray:
        """(…, H, W, 3) uint8 pixels -> (…, 3, H, W) float32, scaled and normalised as ToTensor and
        Normalize do (within 1e-6)."""
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        # Channels first while still one byte a value, then one scaling pass and one in-place
        # shift: a batch of 32 in 5 ms instead of 48 (it runs between the model's batches).
        out = np.multiply(np.ascontiguousarray(np.moveaxis(cropped, -1, -3)), 1.0 / (255.0 * std), dtype=np.float32)
        out -= mean / std
        return out

    def pixels(self, image: Image.Image) -> np.ndarray:
        """transform() with Pillow and NumPy: a (3, size, size) float32 array."""
        return self.normalised(self.cropped(image))

    def split_numpy(self) -> NumpySplit:
        """pixels() split for decode workers (cropped uint8) and the batch side (normalised)."""
        return NumpySplit(self)


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


@dataclass(frozen=True)
class NumpySplit:
    """SplitTransform's counterpart without torch: the same uint8 pixels per image, and a float32
    (n, 3, H, W) NumPy batch for an image path exported to onnxruntime. Picklable."""

    preprocessing: Preprocessing
    splits: ClassVar[bool] = True  # per_image gives uint8 pixels, as a SplitTransform that splits

    def per_image(self, image: Image.Image) -> np.ndarray:
        return self.preprocessing.cropped(image)

    def per_batch(self, items: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
        return self.preprocessing.normalised(np.stack(items))  # type: ignore[arg-type]  # per_image's arrays


# How decode workers and the model's process share one model's preprocessing.
PixelSplit = SplitTransform | NumpySplit


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

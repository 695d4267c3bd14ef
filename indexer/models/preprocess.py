"""A model's preprocessing split in two: the per-image part for decode workers, the rest per batch.

Decode workers hand their output to the process running the model. A normalised float tensor of a
224-px image is 600 KB; the same image as uint8 pixels is 150 KB, so the workers stop at the
PIL image (resize, crop) and the model's process converts whole batches (ToTensor, Normalize),
which gives the same tensor as the full transform applied image by image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

__all__ = ["SplitTransform", "split_transform"]


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
        if not self.splits:
            return torch.stack(list(items))  # type: ignore[arg-type]
        batch = torch.from_numpy(np.stack(items)).permute(0, 3, 1, 2).float().div_(255.0)
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

"""Preprocessing split between decode workers (uint8 pixels) and the model's process (batches)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from xmodal.indexer.models.preprocess import split_transform


def _photos() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((240, 320), (300, 200), (224, 224))]


def test_split_gives_the_same_batch_as_the_whole_transform() -> None:
    whole = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(), T.Normalize((0.5,) * 3, (0.25, 0.5, 0.75))])
    split = split_transform(whole)
    assert split.splits
    items = [split.per_image(im) for im in _photos()]
    assert all(isinstance(item, np.ndarray) and item.dtype == np.uint8 for item in items)
    expected = torch.stack([whole(im) for im in _photos()])
    assert torch.allclose(split.per_batch(items), expected, atol=1e-6)


def test_unknown_steps_after_to_tensor_stay_in_the_workers() -> None:
    whole = T.Compose([T.CenterCrop(64), T.ToTensor(), T.Lambda(lambda x: x * 2)])
    split = split_transform(whole)
    assert not split.splits
    items = [split.per_image(im) for im in _photos()]
    assert torch.equal(split.per_batch(items), torch.stack([whole(im) for im in _photos()]))
    plain = split_transform(lambda im: torch.zeros(3, 8, 8))  # not a Compose at all
    assert not plain.splits and split.per_batch([plain.per_image(_photos()[0])]).shape == (1, 3, 8, 8)

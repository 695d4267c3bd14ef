"""Preprocessing split between decode workers (uint8 pixels) and the model's process (batches)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from xmodal.indexer.models.preprocess import split_transform


def _photos() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for h, w in ((240, 320), (300, 200), (224, 224))
    ]


def test_split_gives_the_same_batch_as_the_whole_transform() -> None:
    whole = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize((0.5,) * 3, (0.25, 0.5, 0.75)),
        ]
    )
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


def test_one_preprocessing_definition_gives_the_same_pixels_with_and_without_torch() -> None:
    """The offline default's preprocessing is data (OFFLINE_PREPROCESSING); torchvision, the decode
    workers' split and the torch-free query path all run that one definition."""
    from xmodal.indexer.models.preprocess import OFFLINE_PREPROCESSING, Preprocessing
    from xmodal.indexer.models.spec import parse_model_spec

    assert parse_model_spec("xmodal-lite").capabilities.preprocessing == OFFLINE_PREPROCESSING
    photos = _photos() + [Image.new("RGBA", (300, 120), (10, 200, 30, 128)), Image.new("L", (90, 400), 77)]
    for preprocessing in (OFFLINE_PREPROCESSING, Preprocessing(64, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4), "bilinear")):
        transform = preprocessing.transform()
        torch_path = torch.stack([transform(im.convert("RGB")) for im in photos])
        numpy_path = np.stack([preprocessing.pixels(im.convert("RGB")) for im in photos])
        np.testing.assert_allclose(numpy_path, torch_path.numpy(), atol=1e-6)
        split = split_transform(transform)
        assert split.splits
        assert torch.allclose(
            split.per_batch([split.per_image(im.convert("RGB")) for im in photos]), torch_path, atol=1e-6
        )


def test_capabilities_not_model_names() -> None:
    from xmodal.indexer.models.spec import capabilities, parse_model_spec

    lite = parse_model_spec("xmodal-lite").capabilities
    assert (lite.prior_dim, lite.tower_features, lite.fusion_file, lite.towers) == (
        384,
        True,
        "offline_fusion.npz",
        "offline",
    )
    assert [f.is_file() for f in parse_model_spec("xmodal-lite").head_files] == [True]
    clip = parse_model_spec("ViT-B-32:laion2b_s34b_b79k")
    assert clip.capabilities == capabilities("ViT-B-32") and clip.capabilities.prior_dim == 0 and clip.head_files == ()


def test_numpy_split_gives_the_torch_split_batch_without_torch() -> None:
    """An indexing run whose image path is exported preprocesses with Pillow and NumPy alone: the
    same uint8 pixels per image and the same batch as the torchvision split."""
    from xmodal.indexer.models.preprocess import OFFLINE_PREPROCESSING, Preprocessing

    for preprocessing in (
        OFFLINE_PREPROCESSING,
        Preprocessing(64, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4), "bilinear", "squash"),
    ):
        numpy_split, torch_split = preprocessing.split_numpy(), split_transform(preprocessing.transform())
        items = [numpy_split.per_image(im) for im in _photos()]
        assert all(np.array_equal(a, b) for a, b in zip(items, [torch_split.per_image(im) for im in _photos()]))
        batch = numpy_split.per_batch(items)
        assert isinstance(batch, np.ndarray) and batch.dtype == np.float32 and batch.flags.c_contiguous
        np.testing.assert_allclose(batch, torch_split.per_batch(items).numpy(), atol=1e-6)


def test_open_clip_resize_modes() -> None:
    """SigLIP-style "squash" is described (and matches open_clip's own transform); "longest" pads,
    which is not, so such a model keeps its own transform (no Preprocessing, no export)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from xmodal.indexer.models.preprocess import Preprocessing

    cfg = {
        "size": 48,
        "mean": (0.5, 0.4, 0.3),
        "std": (0.2, 0.3, 0.4),
        "interpolation": "bicubic",
        "resize_mode": "squash",
    }
    squash = Preprocessing.from_open_clip(cfg)
    assert squash is not None and squash.resize_mode == "squash"
    theirs = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    for im in _photos():
        np.testing.assert_allclose(squash.pixels(im), theirs(im).numpy(), atol=1e-5)
    assert Preprocessing.from_open_clip({**cfg, "resize_mode": "longest"}) is None
    assert Preprocessing.from_open_clip({"size": 224}) == Preprocessing.from_open_clip(
        {"size": 224, "resize_mode": "shortest"}
    )

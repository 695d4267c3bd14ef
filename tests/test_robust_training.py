"""Robust head training: the prior mix (WiSE-FT), its choice on held-out photos, and `xmodal train`
building the same head as the shipped head's script (issue 11 bug 1)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from xmodal.indexer.models.head import HeadConfig, ProjectionHead, train_head
from xmodal.indexer.pairs import CaptionedImage
from xmodal.search.training.robust import (
    MIN_PRIOR_MIX,
    MIX_GRID,
    choose_on_held_out,
    choose_prior_mix,
    retrieval_recall,
    split_held_out,
)

SHAPES = ("circle", "square", "cross")
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 220), "yellow": (230, 210, 30)}


def _synthetic(
    n_photos: int, dim: int = 48, prior_dim: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tower-like features whose last prior_dim columns are a noisy copy of the photo's caption vector."""
    g = torch.Generator().manual_seed(seed)
    topic = F.normalize(torch.randn(n_photos, prior_dim, generator=g), dim=-1)
    owners = torch.arange(n_photos).repeat_interleave(2)
    texts = F.normalize(topic[owners] + 0.3 * torch.randn(len(owners), prior_dim, generator=g), dim=-1)
    base = topic @ torch.randn(prior_dim, dim - prior_dim, generator=g) + 0.5 * torch.randn(
        n_photos, dim - prior_dim, generator=g
    )
    prior = F.normalize(topic + 0.5 * torch.randn(n_photos, prior_dim, generator=g), dim=-1)
    return torch.cat([base, prior], dim=1), texts, owners


def test_recall_matches_a_naive_oracle() -> None:
    rng = np.random.default_rng(3)
    images = F.normalize(torch.from_numpy(rng.normal(size=(7, 5))).float(), dim=-1)
    owners = torch.from_numpy(rng.integers(0, 7, size=15))
    texts = F.normalize(images[owners] + torch.from_numpy(rng.normal(scale=0.8, size=(15, 5))).float(), dim=-1)
    got = retrieval_recall(images, texts, owners, ks=(1, 3))
    s = (texts @ images.T).numpy()
    for k in (1, 3):
        t2i = np.mean([int(owners[q]) in np.argsort(-s[q], kind="stable")[:k] for q in range(15)])
        with_text = [i for i in range(7) if (owners == i).any()]
        i2t = np.mean(
            [
                bool(set(np.argsort(-s[:, i], kind="stable")[:k]) & set(np.flatnonzero(owners.numpy() == i)))
                for i in with_text
            ]
        )
        assert got[f"t2i@{k}"] == pytest.approx(100 * t2i) and got[f"i2t@{k}"] == pytest.approx(100 * i2t)


def test_prior_mix_interpolates_between_the_head_and_the_prior() -> None:
    feats, texts, owners = _synthetic(40)
    head = train_head(feats, texts, owners, HeadConfig(embed_dim=16, prior_dim=16, image_hidden=32, epochs=2), seed=0)
    x = feats[:5]
    assert torch.allclose(head.with_prior_mix(0.0).project_images(x), head.project_images(x))
    assert torch.allclose(head.with_prior_mix(1.0).project_images(x), F.normalize(x[:, -16:], dim=-1), atol=1e-6)
    half = head.with_prior_mix(0.5).project_images(x)
    expected = F.normalize(head.project_images(x) + F.normalize(x[:, -16:], dim=-1), dim=-1)
    assert torch.allclose(half, expected, atol=1e-6) and head.config.prior_mix == 0.0  # the original is untouched
    with pytest.raises(ValueError):
        head.with_prior_mix(1.5)


def test_prior_mix_is_saved_with_the_head(tmp_path: Path) -> None:
    feats, texts, owners = _synthetic(30)
    head = train_head(
        feats, texts, owners, HeadConfig(embed_dim=16, prior_dim=16, image_hidden=32, epochs=1, prior_mix=0.4), seed=1
    )
    head.save(str(tmp_path / "h.pt"))
    loaded = ProjectionHead.load(str(tmp_path / "h.pt"))
    assert loaded.config.prior_mix == 0.4
    assert torch.allclose(loaded.project_images(feats[:4]), head.project_images(feats[:4]), atol=2e-3)  # fp16 weights


def test_an_ensemble_averages_its_members_unit_outputs_then_mixes_the_prior(tmp_path: Path) -> None:
    feats, texts, owners = _synthetic(40)
    config = HeadConfig(embed_dim=16, prior_dim=16, image_hidden=32, epochs=2, prior_mix=0.2)
    single = dataclasses.replace(config, members=1)
    members = [train_head(feats, texts, owners, single, seed=5 + i) for i in range(3)]
    ensemble = train_head(feats, texts, owners, dataclasses.replace(config, members=3), seed=5)
    assert ensemble.config.members == 3
    x = feats[:6]
    with torch.no_grad():
        mean = torch.stack([F.normalize(m._image_raw(x), dim=-1) for m in members]).mean(0)
        prior = F.normalize(x[:, -16:], dim=-1)
        expected = F.normalize(0.8 * F.normalize(mean, dim=-1) + 0.2 * prior, dim=-1)
        assert torch.allclose(ensemble.project_images(x), expected, atol=1e-6)
        assert not torch.allclose(ensemble.project_images(x), members[0].project_images(x), atol=1e-3)
        assert torch.equal(ensemble.project_texts(texts[:3]), members[0].project_texts(texts[:3]))
    ensemble.save(str(tmp_path / "e.pt"))
    loaded = ProjectionHead.load(str(tmp_path / "e.pt"))
    assert loaded.config.members == 3
    assert torch.allclose(loaded.project_images(x), ensemble.project_images(x), atol=2e-3)  # fp16 weights
    # a single head saves exactly what it saved before ensembles existed
    assert not any(k.startswith("more_") for k in members[0].state_dict())


def test_a_head_saved_by_earlier_versions_still_loads(tmp_path: Path) -> None:
    """Heads users trained before int8 storage: torch.save of an fp16 state dict (format /1)."""
    feats, texts, owners = _synthetic(30)
    head = train_head(feats, texts, owners, HeadConfig(embed_dim=16, prior_dim=16, image_hidden=32, epochs=1), seed=2)
    old = {
        "format": "xmodal.projection_head/1",
        "image_dim": head.image_dim,
        "text_dim": head.text_dim,
        "config": dataclasses.asdict(head.config),
        "state_dict": {k: v.half() for k, v in head.state_dict().items()},
    }
    torch.save(old, tmp_path / "old.pt")
    head.save(str(tmp_path / "new.pt"))
    with torch.no_grad():
        want = head.project_images(feats[:8])
        fp16 = ProjectionHead.load(str(tmp_path / "old.pt")).project_images(feats[:8])
        int8 = ProjectionHead.load(str(tmp_path / "new.pt")).project_images(feats[:8])
    assert torch.allclose(fp16, want, atol=2e-3)
    assert (int8 * want).sum(-1).min() > 0.9999  # int8 rows: a small head loses a little more than fp16


def test_choose_prior_mix_prefers_the_prior_within_tolerance_and_keeps_the_floor() -> None:
    assert choose_prior_mix({0.0: 50.0, 0.3: 49.5, 0.5: 49.2, 0.8: 40.0}, floor=0.3, tolerance=1.0) == 0.5
    assert choose_prior_mix({0.0: 80.0, 0.3: 60.0, 0.4: 58.0}, floor=0.3, tolerance=1.0) == 0.3  # never below the floor
    assert choose_prior_mix({0.0: 50.0, 1.0: 51.0}, floor=0.0, tolerance=0.0) == 1.0


def test_held_out_split_is_seeded_and_disjoint() -> None:
    fit, held = split_held_out(50, 0.2, seed=4)
    assert len(held) == 10 and not set(fit) & set(held) and len(fit) + len(held) == 50
    assert np.array_equal(held, split_held_out(50, 0.2, seed=4)[1])
    assert len(split_held_out(8, 0.2, seed=0)[1]) == 0  # too few to hold any out


def test_choice_on_held_out_reports_figures_and_warns_when_data_are_few() -> None:
    feats, texts, owners = _synthetic(60)
    config = HeadConfig(embed_dim=16, prior_dim=16, image_hidden=32, epochs=3)
    choice = choose_on_held_out(feats, texts, owners, config, seed=0)
    assert choice.held_out_photos == 12 and set(choice.by_mix) == set(MIX_GRID)
    assert MIN_PRIOR_MIX <= choice.prior_mix <= 1.0 and choice.chosen is not None and choice.head_alone is not None
    assert choice.prior_alone is not None and set(choice.chosen) == {
        f"{d}@{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)
    }
    assert any("photos to train on" in w for w in choice.warnings) and any(
        "held-out photos" in w for w in choice.warnings
    )
    again = choose_on_held_out(feats, texts, owners, config, seed=0)
    assert again.by_mix == choice.by_mix  # deterministic
    assert choose_on_held_out(feats, texts, owners, config, held_out=0.0).held_out_photos == 0


def test_without_a_prior_nothing_is_mixed() -> None:
    feats, texts, owners = _synthetic(40)
    config = HeadConfig(embed_dim=16, prior_dim=0, image_hidden=32, epochs=2)
    choice = choose_on_held_out(feats, texts, owners, config, seed=0)
    assert choice.prior_mix == 0.0 and set(choice.by_mix) == {0.0} and choice.prior_alone is None


# -- the real offline default (issue 11 bug 1) ---------------------------------------------------
def _drawings(folder: Path, n: int = 12) -> list[CaptionedImage]:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        colour, shape = list(COLOURS)[i % 4], SHAPES[i % 3]
        im = Image.new("RGB", (96, 80), (240, 240, 235))
        draw = ImageDraw.Draw(im)
        box = (20 + i, 15, 70 + i, 65)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
        path = folder / f"{i:02d}.png"
        im.save(path)
        pairs.append(CaptionedImage(path, (f"a {colour} {shape}", f"a drawing of a {colour} {shape}")))
    return pairs


@pytest.fixture(scope="module")
def offline():  # noqa: ANN201
    from xmodal.indexer.models.embedding import load_model

    return load_model()


@pytest.mark.slow
def test_xmodal_train_builds_the_shipped_heads_head_on_the_offline_default(offline, tmp_path: Path) -> None:  # noqa: ANN001
    """Bug 1: training read getattr(towers, "prior_dim", 0) and dropped the ConSE prior the shipped head builds on."""
    from xmodal.data import data_path
    from xmodal.search.training.head import pair_features, train_projection_head

    pairs = _drawings(tmp_path / "photos")
    report = train_projection_head(offline, pairs, tmp_path / "head.pt", epochs=2, seed=3, held_out=0.0)
    head = ProjectionHead.load(str(report.path))
    shipped = ProjectionHead.load(str(data_path("offline_head.pt")))
    assert head.config.prior_dim == offline.spec.capabilities.prior_dim == shipped.config.prior_dim == 384
    mine, theirs = dataclasses.asdict(head.config), dataclasses.asdict(shipped.config)
    assert {k: v for k, v in mine.items() if k != "epochs"} == {k: v for k, v in theirs.items() if k != "epochs"}
    # ... and exactly the head the shipped head's training builds from the same features
    images, texts, owners = pair_features(offline, pairs)
    expected = train_head(images, texts, owners, dataclasses.replace(shipped.config, epochs=2), seed=3)
    expected.save(str(tmp_path / "expected.pt"))
    expected = ProjectionHead.load(str(tmp_path / "expected.pt"))
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), expected.state_dict().values()))


@pytest.mark.slow
def test_train_command_prints_both_held_out_figures_and_warns(offline, tmp_path: Path) -> None:  # noqa: ANN001
    from xmodal.cli.app import app

    pairs = _drawings(tmp_path / "photos", n=20)
    lines = [json.dumps({"image": str(p.image), "captions": list(p.captions)}) for p in pairs]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines))
    result = CliRunner().invoke(
        app, ["train", str(tmp_path / "pairs.jsonl"), "--out", str(tmp_path / "h.pt"), "--epochs", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "head alone" in result.output and "with prior mix" in result.output and "prior alone" in result.output
    assert "xmodal: warning: only 16 photos to train on" in result.output
    assert ProjectionHead.load(str(tmp_path / "h.pt")).config.prior_mix >= MIN_PRIOR_MIX

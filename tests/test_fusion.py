"""Learned fusion (xmodal.search.rerank.fusion and its training) on small synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.fusion import (
    fit_fusion_weights,
    train_linear_projection,
)
from xmodal.search.rerank.fusion import (
    FEATURES,
    TOP,
    FusionModel,
    LinearProjection,
    extra_columns,
    fusion_features,
    standardise,
)
from xmodal.search.rerank.qbnorm import querybank_correction


def synthetic_lists(rng: np.random.Generator, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """(q, TOP, 3): weak cosine, a strongly informative feature, pure noise; the right photo at a random position."""
    labels = rng.integers(0, TOP, queries)
    x = rng.normal(size=(queries, TOP, 3))
    rows = np.arange(queries)
    x[rows, labels, 0] += 0.5
    x[rows, labels, 1] += 2.0
    return x, labels


@pytest.mark.slow
def test_fit_fusion_weights_trusts_the_informative_feature_and_ignores_noise() -> None:
    rng = np.random.default_rng(0)
    folds = [synthetic_lists(rng, 200) for _ in range(3)]
    w = fit_fusion_weights([x for x, _ in folds], [y for _, y in folds])
    assert w.shape == (3,)
    assert w[1] > 0.5 and w[1] > 2 * w[0] > 0
    assert abs(w[2]) < 0.15
    # better than the first stage on fresh lists
    x, y = synthetic_lists(rng, 500)
    assert (np.argmax(standardise(x) @ w, 1) == y).mean() > (np.argmax(x[..., 0], 1) == y).mean() + 0.2


def test_fit_fusion_weights_drops_queries_without_their_photo() -> None:
    rng = np.random.default_rng(1)
    x, y = synthetic_lists(rng, 300)
    junk = rng.normal(size=(100, TOP, 3)) * 5
    w = fit_fusion_weights([x], [y])
    w_junk = fit_fusion_weights([x, junk], [y, np.full(100, -1)])
    np.testing.assert_allclose(w, w_junk, atol=1e-6)
    with pytest.raises(ValueError):
        fit_fusion_weights([junk], [np.full(100, -1)])


def linear_data(
    rng: np.random.Generator, photos: int = 40, dim: int = 24, embed: int = 8
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Photos whose features are a fixed linear image of their captions' mean text vector plus noise;
    3 captions a photo (noisy copies of the photo's text direction)."""
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    direction = unit(rng.normal(size=(photos, embed)))
    owner = np.repeat(np.arange(photos), 3)
    texts = unit(direction[owner] + 0.3 * rng.normal(size=(len(owner), embed)))
    mix = rng.normal(size=(embed, dim))
    features = direction @ mix + 0.1 * rng.normal(size=(photos, dim)) + 5.0  # an offset: standardisation must remove it
    return torch.from_numpy(features.astype(np.float32)), texts, owner


@pytest.mark.slow
def test_linear_projection_maps_photos_next_to_their_captions() -> None:
    rng = np.random.default_rng(0)
    features, texts, owner = linear_data(rng)
    linear = train_linear_projection(features, texts, owner, seed=0, epochs=400)
    assert linear.weight.shape == (texts.shape[1], features.shape[1]) and linear.mean.shape == (features.shape[1],)
    photos = linear.project(features.numpy())
    np.testing.assert_allclose(np.linalg.norm(photos, axis=1), 1.0, atol=1e-9)
    r1 = (np.argmax(texts @ photos.T, axis=1) == owner).mean()
    assert r1 > 0.3  # chance: 1/40 (heavy input dropout: it learns slowly)


def test_linear_projection_is_deterministic_takes_views_and_leaves_the_global_rng_alone() -> None:
    features, texts, owner = linear_data(np.random.default_rng(1))
    views = torch.stack(
        [features, features + 0.1 * torch.randn(features.shape, generator=torch.Generator().manual_seed(3))], 1
    )
    state = torch.random.get_rng_state()
    a = train_linear_projection(views, texts, owner, seed=1, epochs=5)
    b = train_linear_projection(views, texts, owner, seed=1, epochs=5)
    c = train_linear_projection(views, texts, owner, seed=2, epochs=5)
    assert torch.equal(state, torch.random.get_rng_state())
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, c.weight)
    with pytest.raises(ValueError):
        train_linear_projection(features, texts, owner[:-1], epochs=1)
    with pytest.raises(ValueError):
        train_linear_projection(features, texts, np.full(len(owner), len(features)), epochs=1)


def fusion_model(rng: np.random.Generator, dim: int = 384, tower_dim: int = 400) -> FusionModel:
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    linear = LinearProjection(
        mean=rng.normal(size=tower_dim),
        scale=rng.uniform(0.5, 2.0, tower_dim),
        weight=rng.normal(size=(dim, tower_dim)).astype(np.float32),
        bias=rng.normal(size=dim),
    )
    return FusionModel(
        weights=np.linspace(1.0, 0.2, len(FEATURES)),
        train_captions=unit(rng.normal(size=(30, dim))),
        caption_photo=rng.integers(0, 6, 30),
        train_photos=unit(rng.normal(size=(6, dim))),
        linear=linear,
    )


def test_fusion_features_and_scores_are_finite_with_and_without_a_bank() -> None:
    rng = np.random.default_rng(0)
    model = fusion_model(rng)
    query = rng.normal(size=384)
    query /= np.linalg.norm(query)
    photos = rng.normal(size=(TOP, 384))
    photos /= np.linalg.norm(photos, axis=1, keepdims=True)
    tower = rng.normal(size=(TOP, 400))
    for hub in (-querybank_correction(rng.normal(size=(50, TOP)) * 0.3, 10.0), np.zeros(TOP)):
        x = fusion_features(model, query, photos, tower, hub)
        assert x.shape == (TOP, len(FEATURES)) and np.isfinite(x).all()
        np.testing.assert_allclose(x[:, FEATURES.index("hub")], hub)
        np.testing.assert_allclose(x[:, 0], photos @ query)
        np.testing.assert_allclose(x[:, FEATURES.index("linear_cosine")], model.linear.project(tower) @ query)
        assert np.abs(x[:, FEATURES.index("linear_cosine")]).max() <= 1.0 + 1e-9
        assert np.isfinite(model.scores(x)).all()


def test_fusion_model_round_trips_through_its_file(tmp_path: Path) -> None:
    model = fusion_model(np.random.default_rng(0))
    path = tmp_path / "fusion.npz"
    model.save(path)
    loaded = FusionModel.load(path)
    np.testing.assert_array_equal(loaded.weights, model.weights)
    np.testing.assert_array_equal(loaded.caption_photo, model.caption_photo)
    np.testing.assert_allclose(loaded.train_photos, model.train_photos, atol=1e-3)  # stored as float16
    tower = np.random.default_rng(1).normal(size=(4, 400))
    np.testing.assert_allclose(
        loaded.linear.project(tower), model.linear.project(tower), atol=2e-3
    )  # weight stored as int8
    np.testing.assert_array_equal(loaded.linear.mean, model.linear.mean)


def test_a_fusion_file_written_before_int8_weights_still_loads(tmp_path: Path) -> None:
    model = fusion_model(np.random.default_rng(0))
    path = tmp_path / "fusion.npz"
    model.save(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if not k.startswith("linear_weight_")}
    arrays["linear_weight"] = model.linear.weight.astype(np.float16)  # the earlier layout
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    tower = np.random.default_rng(1).normal(size=(4, 400))
    old, new = FusionModel.load(tmp_path / "old.npz"), FusionModel.load(path)
    np.testing.assert_allclose(old.linear.project(tower), model.linear.project(tower), atol=1e-3)
    assert (old.linear.project(tower) * new.linear.project(tower)).sum(1).min() > 0.999


def test_fusion_model_refuses_a_file_made_for_other_features(tmp_path: Path) -> None:
    model = fusion_model(np.random.default_rng(0))
    path = tmp_path / "fusion.npz"
    model.save(path)
    with np.load(path) as f:
        arrays = dict(f)
    arrays["features"] = np.array((*FEATURES[:4], "words", FEATURES[4]))  # the older six-feature model
    arrays["weights"] = np.ones(len(FEATURES) + 1)
    old = tmp_path / "old.npz"
    np.savez_compressed(old, **arrays)
    with pytest.raises(ValueError, match="other features"):
        FusionModel.load(old)


def test_extra_features_are_read_by_name_and_count_as_absent_when_not_given(tmp_path: Path) -> None:
    """The hook for the caller's per-candidate signals (e.g. a text-in-photo match)."""
    base = fusion_model(np.random.default_rng(0))
    weights = np.concatenate([base.weights, [2.0, 0.5]])
    model = FusionModel(
        weights, base.train_captions, base.caption_photo, base.train_photos, base.linear, ("in_photo", "name")
    )
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(TOP, len(FEATURES)))
    match = np.zeros(TOP)
    match[7] = 1.0
    given = extra_columns(model.extra, {"in_photo": match, "unknown": np.ones(TOP)}, TOP)
    assert given.shape == (TOP, 2) and given[7, 0] == 1.0 and not given[:, 1].any()
    boosted, plain = model.scores(raw, given), model.scores(raw)
    assert boosted[7] - np.delete(boosted, 7).max() > plain[7] - np.delete(plain, 7).max()
    # no extra features given: the same order as the model's own features alone
    np.testing.assert_allclose(plain, standardise(raw) @ base.weights)
    with pytest.raises(ValueError, match="3 values for 20"):
        extra_columns(model.extra, {"name": np.ones(3)}, TOP)
    with pytest.raises(ValueError, match="weights"):
        FusionModel(base.weights, base.train_captions, base.caption_photo, base.train_photos, base.linear, ("x",))
    path = tmp_path / "fusion.npz"
    model.save(path)
    loaded = FusionModel.load(path)
    assert loaded.extra == ("in_photo", "name")
    np.testing.assert_allclose(loaded.scores(raw, given), boosted)
    base.save(path)
    assert FusionModel.load(path).extra == ()

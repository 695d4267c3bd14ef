"""Fast tests of the learned cross-modal reranker (synthetic data, no towers, no dataset)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from search.cross_reranker import CrossReranker, RerankerConfig, rerank_candidates
from search.reranker_training import RerankerFeatures, TrainConfig, _Fold, _recall_at_1, _fold_logits, fit_reranker

SMALL = RerankerConfig(image_dim=16, text_dim=12, width=32, heads=2, layers=1, dropout=0.0)


def _toy(n_photos: int = 16, caps_per: int = 2, seed: int = 0) -> tuple[RerankerFeatures, list[_Fold]]:
    """Photo i and its captions share a random 'concept' vector; the first-stage scores are pure noise."""
    g = torch.Generator().manual_seed(seed)
    concept = torch.randn(n_photos, 8, generator=g)
    to_img, to_txt = torch.randn(8, 16, generator=g), torch.randn(8, 12, generator=g)
    grid = (concept @ to_img)[:, None, :] + 0.3 * torch.randn(n_photos, 9, 16, generator=g)
    owners = torch.arange(n_photos).repeat_interleave(caps_per)
    tokens = (concept[owners] @ to_txt)[:, None, :] + 0.3 * torch.randn(len(owners), 5, 12, generator=g)
    mask = torch.ones(len(owners), 5, dtype=torch.bool)
    mask[::3, 4] = False
    feats = RerankerFeatures(grid.half(), torch.zeros(n_photos, 4), tokens.half(), mask, torch.zeros(len(owners), 4), owners)
    sims = 0.01 * torch.randn(len(owners), n_photos, generator=g)
    fold = _Fold(torch.arange(n_photos), torch.arange(len(owners)), owners.clone(), sims)
    return feats, [fold]


CFG = TrainConfig(epochs=8, batch_size=8, negatives=5, mine_depth=20, lr=3e-3, rerank_depth=100)


def test_shapes_and_rerank_candidates() -> None:
    net = CrossReranker(SMALL)
    c, L = 7, 5
    out = net.score(torch.randn(c, 9, 16), torch.randn(c, L, 12), torch.ones(c, L, dtype=torch.bool), torch.rand(c))
    assert out.shape == (c,) and out.dtype == torch.float32
    # text->image: one query text against c grids; image->text: one grid against c texts.
    first = np.random.default_rng(0).random(c)
    s = rerank_candidates(net, first, grids=torch.randn(c, 9, 16), tokens=torch.randn(1, L, 12), mask=torch.ones(1, L, dtype=torch.bool))
    assert s.shape == (c,)
    s = rerank_candidates(net, first, grids=torch.randn(1, 9, 16), tokens=torch.randn(c, L, 12), mask=torch.ones(c, L, dtype=torch.bool))
    assert s.shape == (c,)
    assert rerank_candidates(net, np.zeros(0), grids=torch.zeros(0, 9, 16), tokens=torch.zeros(1, L, 12), mask=torch.ones(1, L, dtype=torch.bool)).shape == (0,)
    # Padding positions do not change the score.
    tok, m = torch.randn(2, L, 12), torch.ones(2, L, dtype=torch.bool)
    m[:, 3:] = False
    tok2 = tok.clone()
    tok2[:, 3:] = 99.0
    g = torch.randn(2, 9, 16)
    assert torch.allclose(net.score(g, tok, m, torch.zeros(2)), net.score(g, tok2, m, torch.zeros(2)), atol=1e-5)


def test_save_load_round_trip(tmp_path: Path) -> None:
    net = CrossReranker(SMALL)
    # Make the weights fp16-exact so the round trip is bit-identical.
    with torch.no_grad():
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.copy_(p.half().float())
    net.combine_weight.fill_(0.05)
    path = tmp_path / "r.pt"
    net.save(path)
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["width"] == 32
    loaded = CrossReranker.load(path)
    args = (torch.randn(4, 9, 16), torch.randn(4, 5, 12), torch.ones(4, 5, dtype=torch.bool), torch.rand(4))
    assert torch.equal(net.score(*args), loaded.score(*args))
    assert float(loaded.combine_weight) == float(net.combine_weight)
    assert np.array_equal(net.combine([0.1, 0.2], [1.0, -1.0]), loaded.combine([0.1, 0.2], [1.0, -1.0]))


def test_training_is_deterministic() -> None:
    feats, folds = _toy()
    cfg = dataclasses.replace(CFG, epochs=1)
    a, ha = fit_reranker(feats, folds, [], cfg, seed=3, net_config=SMALL)
    b, hb = fit_reranker(feats, folds, [], cfg, seed=3, net_config=SMALL)
    assert ha == hb
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_learns_to_rank_positives_first() -> None:
    feats, folds = _toy()
    fold = folds[0]
    before = _recall_at_1(fold, *_fold_logits(CrossReranker(SMALL), feats, fold, 100), 1.0)
    net, history = fit_reranker(feats, folds, folds, CFG, seed=0, net_config=SMALL)
    after = _recall_at_1(fold, *_fold_logits(net, feats, fold, 100), float(net.combine_weight))
    assert history[-1][1] < history[0][1]  # loss goes down
    assert float(net.combine_weight) > 0
    assert min(after) >= 80.0 and min(after) > max(before)

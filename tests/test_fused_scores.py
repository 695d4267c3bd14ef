"""Issue 24: after the learned fusion, hits carried the first stage's sorted scores handed out in the
new order. Each hit's score is now its own: the fusion's score of that photo, mapped onto the range of
the top candidates' cosines (the offline default model, which ships a fusion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from xmodal.indexer import Indexer, load_model
from xmodal.search import SearchEngine
from xmodal.search.rerank.fusion import TOP, fusion_features
from xmodal.search.rerank.stages import RerankOptions

QUERY = "a red ball on a white wall"


def _photos(folder: Path, count: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for n in range(count):
        im = Image.new("RGB", (160, 120), tuple(int(c) for c in rng.integers(150, 255, 3)))
        draw = ImageDraw.Draw(im)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if n % 2 else draw.rectangle)((40, 20, 120, 100), fill=colour)
        im.save(folder / f"p{n:02d}.png")
    return folder


@pytest.mark.slow
def test_fused_hits_carry_their_own_scores(tmp_path: Path) -> None:
    model = load_model()
    Indexer(tmp_path / "idx", model=model).add_paths([_photos(tmp_path / "photos", 30)])
    with SearchEngine.open(tmp_path / "idx", model=model) as engine:
        fusion = engine.second_stage.fusion()
        assert fusion is not None  # the offline default ships one
        cosine = engine.search(QUERY, k=30, rerank=RerankOptions(hubness=False, learned=False))
        fused = engine.search(QUERY, k=30, rerank=RerankOptions(hubness=False))
        # the fusion's own score of each of the top candidates by cosine, from the public parts
        top = [h.id for h in cosine[:TOP]]
        features = engine.store.metadata.tower_features(top)
        raw = fusion_features(
            fusion, engine.embed_query(QUERY), engine.vectors(top), np.stack([features[i] for i in top]), np.zeros(TOP)
        )
        own = fusion.scores(raw)
        high = cosine[0].score
        low = max(cosine[TOP - 1].score, cosine[TOP].score)
        expected = dict(zip(top, low + (high - low) * (own - own.min()) / (own.max() - own.min())))
        got = {h.id: h.score for h in fused}
        assert np.allclose([got[i] for i in top], [expected[i] for i in top], atol=1e-4)
        assert [h.id for h in fused[:TOP]] == sorted(top, key=lambda i: -expected[i])
        scores = [h.score for h in fused]
        assert scores == sorted(scores, reverse=True)  # monotone in rank
        floor = fused[6].score
        above = engine.search(QUERY, k=30, rerank=RerankOptions(hubness=False), min_score=floor)
        assert [h.id for h in above] == [h.id for h in fused if h.score >= floor]


@pytest.mark.slow
def test_extra_candidate_features_reach_a_fusion_fitted_with_them(tmp_path: Path) -> None:
    """The hook for the caller's per-candidate signals (e.g. a text-in-photo match): a fusion fitted with
    an extra feature reads it by name; without it given, the order is the shipped five features' order."""
    from xmodal.search.rerank.fusion import FusionModel
    from xmodal.search.rerank.pipeline import SecondStage

    model = load_model()
    Indexer(tmp_path / "idx", model=model).add_paths([_photos(tmp_path / "photos", 30)])
    with SearchEngine.open(tmp_path / "idx", model=model) as engine:
        shipped = engine.second_stage.fusion()
        assert shipped is not None and shipped.extra == ()
        query = engine.embed_query(QUERY)[None]
        options = RerankOptions(hubness=False)
        before = engine.search_vectors(query, TOP, rerank=options, query_kind="text")[1][0]
        with_extra = FusionModel(
            np.concatenate([shipped.weights, [5.0]]),
            shipped.train_captions,
            shipped.caption_photo,
            shipped.train_photos,
            shipped.linear,
            ("in_photo",),
        )
        engine.second_stage = SecondStage(engine.store, engine.second_stage.banks, fusion=lambda: with_extra)
        chosen = int(before[TOP - 3])
        seen: list[tuple[int, int]] = []

        def in_photo(row: int, ids: np.ndarray) -> dict[str, np.ndarray]:
            seen.append((row, len(ids)))
            return {"in_photo": (ids == chosen).astype(float), "other": np.ones(len(ids))}

        plain = engine.search_vectors(query, TOP, rerank=options, query_kind="text")[1][0]
        np.testing.assert_array_equal(plain, before)  # nothing given: the extra feature has no effect
        boosted = engine.search_vectors(query, TOP, rerank=options, query_kind="text", extra=in_photo)[1][0]
        assert seen == [(0, TOP)] and boosted[0] == chosen
        assert sorted(boosted.tolist()) == sorted(before.tolist())

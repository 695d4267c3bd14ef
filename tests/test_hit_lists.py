"""Issue 24, wrong results, with the fake encoder: a hit list's score floor (also with diversity),
`auto`, stable pages, near-duplicates folded into the best copy, and the engine's limits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import xmodal.indexer.models.embedding
from tests.conftest import make_image
from tests.fakes import fake_model
from xmodal.cli.app import app
from xmodal.indexer import Indexer
from xmodal.indexer.errors import InvalidQueryError
from xmodal.indexer.limits import Limits
from xmodal.indexer.store.index_store import IndexStore
from xmodal.search import SearchEngine
from xmodal.search.rerank.stages import RerankOptions

FAKE_SPEC = "fake-colour:test"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 photos of random colours: many close to each other, so diversity reorders a lot."""
    root = tmp_path_factory.mktemp("hits")
    rng = np.random.default_rng(0)
    for i in range(60):
        make_image(root / "photos" / f"p{i:02d}.png", tuple(int(c) for c in rng.integers(0, 256, 3)))
    Indexer(root / "idx", model=fake_model()).add_paths([root / "photos"])
    return root / "idx"


@pytest.fixture
def engine(index: Path):
    with SearchEngine.open(index, model=fake_model()) as eng:
        yield eng


def _ids(hits) -> list[int]:  # noqa: ANN001
    return [h.id for h in hits]


DIVERSE = [
    RerankOptions(hubness=False, diverse=0.7),
    RerankOptions(hubness=False, diverse=0.3),
    RerankOptions(diverse=0.5),
]


@pytest.mark.parametrize("options", DIVERSE)
def test_min_score_with_diversity_keeps_exactly_the_hits_above_it(engine: SearchEngine, options: RerankOptions) -> None:
    """The cut kept a prefix of a list MMR had made non-monotonic: hits below the floor came back
    and hits above it were dropped."""
    relevance = RerankOptions(hubness=options.hubness)
    everything = engine.search("red", k=60, rerank=relevance)
    floor = everything[12].score
    above = {h.id for h in everything if h.score >= floor}
    hits = engine.search("red", k=len(above), rerank=options, min_score=floor)
    assert all(h.score >= floor for h in hits)
    assert set(_ids(hits)) == above
    assert _ids(hits) != _ids(everything[: len(above)])  # diversity did reorder them


@pytest.mark.parametrize("options", [False, RerankOptions(hubness=False), *DIVERSE])
def test_auto_is_a_floor_that_does_not_depend_on_k(engine: SearchEngine, options: RerankOptions | bool) -> None:
    """`auto` gave 2 hits at -n 10 and 11 at -n 30, and dropped higher hits than it kept."""
    long = engine.search("red", k=50, rerank=options, min_score="auto")
    assert 1 <= len(long) < 50
    for k in (1, 3, 7):
        assert _ids(engine.search("red", k=k, rerank=options, min_score="auto")) == _ids(long)[:k]
    lowest_kept = min(h.score for h in long)
    all_hits = engine.search("red", k=60, rerank=options)
    assert {h.id for h in all_hits if h.score >= lowest_kept} == set(_ids(long))  # no higher hit dropped


def test_auto_floor_of_a_score_distribution() -> None:
    from xmodal.search.rerank.stages import auto_score_floor

    scores = np.concatenate([[0.9, 0.85, 0.8], np.linspace(0.3, 0.2, 97)])
    floor = auto_score_floor(scores)
    assert 0.3 < floor <= 0.8
    assert auto_score_floor(np.array([0.5, 0.5, 0.5])) == 0.5  # the best hit always stays
    assert auto_score_floor(np.array([-np.inf])) == -np.inf


@pytest.mark.parametrize(
    "options, min_score",
    [
        (RerankOptions(candidates=8, diverse=0.6), None),
        (RerankOptions(candidates=8, diverse=0.6, duplicate_threshold=0.999), "auto"),
        (RerankOptions(candidates=8), 0.2),
        (RerankOptions(diverse=0.5, duplicate_threshold=0.995), None),
    ],
)
def test_pages_put_together_are_one_long_list(engine: SearchEngine, options: RerankOptions, min_score: object) -> None:
    """Paging with diversity repeated or skipped hits: each page (asked as the server asks: offset +
    limit + 1 hits) is a slice of one list, whatever the depth."""
    size = 5
    big = _ids(engine.search("red", k=45, rerank=options, min_score=min_score))  # type: ignore[arg-type]
    pages: list[int] = []
    for offset in range(0, 45, size):
        page = engine.search("red", k=offset + size + 1, rerank=options, min_score=min_score)  # type: ignore[arg-type]
        pages += _ids(page)[offset : offset + size]
    assert pages == big and len(set(big)) == len(big)


def test_scores_fall_monotonically_without_diversity(engine: SearchEngine) -> None:
    for options in (RerankOptions(), RerankOptions(hubness=False), RerankOptions(duplicate_threshold=0.995)):
        scores = [h.score for h in engine.search("red", k=40, rerank=options)]
        assert scores == sorted(scores, reverse=True)


def test_similar_has_the_same_floor_and_never_the_item(engine: SearchEngine) -> None:
    first = engine.search("red", k=1)[0]
    above = engine.similar(first.id, k=20, rerank=RerankOptions(diverse=0.4), min_score=0.9)
    assert first.id not in _ids(above) and all(h.score >= 0.9 for h in above)
    plain = {h.id for h in engine.similar(first.id, k=59, rerank=RerankOptions(diverse=0.4)) if h.score >= 0.9}
    assert set(_ids(above)) == plain


def test_bad_min_scores_are_refused(engine: SearchEngine) -> None:
    for bad in (float("nan"), float("inf"), "high"):
        with pytest.raises(InvalidQueryError):
            engine.search("red", k=3, min_score=bad)  # type: ignore[arg-type]


@pytest.fixture
def copies(tmp_path: Path) -> Path:
    """An original and its chat-app copy (small, quality 35, a little redder: it scores higher for
    "red"), plus photos of other colours."""
    root = tmp_path / "photos"
    make_image(root / "original.jpg", (200, 40, 40), size=(800, 600), quality=95)
    make_image(root / "chat-copy.jpg", (212, 34, 34), size=(160, 120), quality=35)
    make_image(root / "blue.png", (30, 40, 220))
    make_image(root / "green.png", (30, 200, 40))
    Indexer(tmp_path / "idx", model=fake_model()).add_paths([root])
    return tmp_path / "idx"


def test_collapse_keeps_the_best_copy_and_counts_the_others(copies: Path) -> None:
    with SearchEngine.open(copies, model=fake_model()) as engine:
        plain = engine.search("red", k=4, rerank=RerankOptions(hubness=False))
        assert Path(plain[0].path).name == "chat-copy.jpg"  # the copy scores higher
        folded = engine.search("red", k=4, rerank=RerankOptions(hubness=False, duplicate_threshold=0.99))
    assert [Path(h.path).name for h in folded][0] == "original.jpg"
    assert folded[0].copies == 1 and folded[0].score == plain[1].score  # the original's own score
    assert len(folded) == 3 and all(h.copies == 0 for h in folded[1:])
    assert folded[0].as_dict()["copies"] == 1


def test_fold_duplicates_prefers_by_key_and_keeps_the_group_place() -> None:
    from xmodal.search.rerank.stages import fold_duplicates

    vecs = np.eye(4, dtype=np.float32)
    vecs[2] = vecs[0]  # 2 is a copy of 0
    place, chosen, folded = fold_duplicates(np.arange(4), vecs, 0.97, preference=[(5,), (0,), (1,), (0,)])
    assert place.tolist() == [0, 1, 3] and chosen.tolist() == [2, 1, 3] and folded.tolist() == [1, 0, 0]
    # a copy of a hit shown in an earlier block leaves
    _, chosen, _ = fold_duplicates(np.arange(4), vecs, 0.97, shown=vecs[[0]])
    assert chosen.tolist() == [1, 3]


def test_cli_shows_the_copies(copies: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = xmodal.indexer.models.embedding.load_model
    monkeypatch.setattr(
        xmodal.indexer.models.embedding,
        "load_model",
        lambda spec=None, device="auto": fake_model() if str(spec) == FAKE_SPEC else real(spec, device),
    )
    runner = CliRunner()
    result = runner.invoke(app, ["search", "red", "--index", str(copies), "--collapse", "0.99", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert Path(hits[0]["path"]).name == "original.jpg" and hits[0]["copies"] == 1
    table = runner.invoke(app, ["search", "red", "--index", str(copies), "--collapse", "0.99"])
    first = table.output.splitlines()[0].split()
    assert first[0] == "1" and first[2] == "+1" and first[-1].endswith("original.jpg"), table.output


def test_the_engine_keeps_to_its_limits(index: Path) -> None:
    limits = Limits(max_query_chars=8, max_depth=7)
    with SearchEngine(IndexStore.open(index), fake_model(), limits=limits) as engine:
        assert len(engine.search("red", k=50)) == 7
        assert len(engine.search("red", k=50, rerank=False)) == 7
        assert len(engine.search("red", k=50, rerank=RerankOptions(candidates=100))) == 7
        assert np.allclose(engine.embed_text_query("red " + "green " * 50), engine.embed_text_query("red gree"))
        scores, ids = engine.search_texts(["red " + "blue " * 50], k=3)
        assert np.allclose(scores[0], engine.search_texts(["red blue"], k=3)[0][0])


def test_more_like_this_leaves_its_item_out_of_every_stage(engine: SearchEngine) -> None:
    """The item itself (score 1) must not set the `auto` floor, nor take a place in a block."""
    item = engine.search("red", k=1)[0].id
    auto = engine.similar(item, k=20, min_score="auto")
    assert auto and item not in _ids(auto)
    options = RerankOptions(candidates=8, diverse=0.5)
    big = _ids(engine.similar(item, k=30, rerank=options))
    assert item not in big and _ids(engine.similar(item, k=13, rerank=options)) == big[:13]


def test_a_block_below_the_floor_ends_the_list(engine: SearchEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A floor few candidates reach must not rank block after block down to limits.max_depth."""
    from xmodal.search.rerank.pipeline import SecondStage

    runs: list[int] = []
    real = SecondStage.run

    def counted(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        runs.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SecondStage, "run", counted)
    options = RerankOptions(candidates=8)
    best = engine.search("red", k=3, rerank=options)
    assert _ids(engine.search("red", k=40, rerank=options, min_score=best[1].score)) == _ids(best[:2])
    assert engine.search("red", k=40, rerank=options, min_score=1.5) == []
    assert len(runs) == 3  # one block each: the first already ended the list

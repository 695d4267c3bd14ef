"""Queries people ask for, with the fake encoder: filters, combinations, similar, reranking, exports."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_image
from tests.fakes import fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.errors import InvalidQueryError
from xmodal.search import SearchEngine
from xmodal.search.export import hits_to_csv, link_hits, write_contact_sheet
from xmodal.search.filters import SearchFilter, parse_date
from xmodal.search.rerank.qbnorm import querybank_normalise
from xmodal.search.rerank.stages import RerankOptions, fold_duplicates, maximal_marginal_relevance


@pytest.fixture
def engine(tmp_path: Path, db_backend):  # noqa: ANN001 - each search test on SQLite and PostgreSQL
    root = tmp_path / "photos"
    # 30 reddish photos, then a few of other colours in a separate folder
    for i in range(30):
        make_image(root / "reds" / f"r{i:02d}.jpg", (200 + i, 20 + i, 20), size=(64 + i, 48))
    make_image(root / "other" / "green.png", (20, 200, 30), size=(2000, 1000))
    make_image(root / "other" / "blue.png", (20, 30, 210))
    make_image(root / "other" / "dark-red.png", (150, 10, 10))
    os.utime(root / "other" / "blue.png", (0, datetime(2015, 5, 1).timestamp()))
    Indexer(tmp_path / "idx", model=fake_model()).add_paths([root])
    with SearchEngine.open(tmp_path / "idx", model=fake_model()) as eng:
        yield eng, root


def test_filter_under_returns_limit_hits_from_inside_search(engine) -> None:
    eng, root = engine
    hits = eng.search("red", k=3, filters=SearchFilter(under=root / "other"))
    assert len(hits) == 3 and all("/other/" in h.path for h in hits)
    assert Path(hits[0].path).name == "dark-red.png"


def test_filters_ext_size_and_dates(engine) -> None:
    eng, root = engine
    assert {Path(h.path).suffix for h in eng.search("red", k=50, filters=SearchFilter(extensions=("png",)))} == {".png"}
    big = eng.search("red", k=50, filters=SearchFilter(min_width=1000, min_height=800))
    assert [Path(h.path).name for h in big] == ["green.png"]
    old = eng.search("red", k=50, filters=SearchFilter(before=parse_date("2016-01-01")))
    assert [Path(h.path).name for h in old] == ["blue.png"]
    assert len(eng.search("red", k=50, filters=SearchFilter(after=parse_date("1 Jan 2016")))) == 32
    with pytest.raises(InvalidQueryError):
        parse_date("not a date at all")


def test_combined_query_moves_towards_and_away(engine) -> None:
    eng, root = engine
    assert Path(eng.search("blue", k=1)[0].path).name == "blue.png"
    mixed = eng.search(f'"green" + {root / "other" / "blue.png"} - "red"', k=2)
    assert {Path(h.path).name for h in mixed} == {"green.png", "blue.png"}
    with pytest.raises(InvalidQueryError):
        eng.search('"red" - "red"', k=1)


def test_similar_never_returns_the_item_and_vectors_are_stored(engine) -> None:
    eng, _ = engine
    hit = eng.search("red", k=1)[0]
    similar = eng.similar(hit.id, k=5)
    assert len(similar) == 5 and hit.id not in {h.id for h in similar}
    vecs = eng.vectors([similar[0].id, hit.id])
    assert vecs.shape == (2, eng.store.dim) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert np.isclose(float(vecs[0] @ vecs[1]), similar[0].score, atol=1e-4)


def test_batched_text_search_shapes(engine) -> None:
    eng, _ = engine
    scores, ids = eng.search_texts(["red", "green", "blue"], k=4)
    assert scores.shape == ids.shape == (3, 4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_reranked_scores_are_exact_and_diverse_changes_order(engine) -> None:
    eng, _ = engine
    query = eng.embed_query("red")
    scores, ids = eng.search_vectors(query[None], 10, rerank=RerankOptions(hubness=False))
    exact = eng.vectors(ids[0].tolist()) @ query
    assert np.allclose(scores[0], exact, atol=1e-5)
    plain = eng.search("red", k=5, rerank=RerankOptions(hubness=False))
    varied = eng.search("red", k=5, rerank=RerankOptions(hubness=False, diverse=0.3))
    assert plain[0].id == varied[0].id and [h.id for h in plain] != [h.id for h in varied]


def test_min_score_cutoffs(engine) -> None:
    eng, _ = engine
    all_hits = eng.search("green", k=20, rerank=False)
    assert len(eng.search("green", k=20, rerank=False, min_score=all_hits[2].score)) == 3
    auto = eng.search("green", k=20, rerank=False, min_score="auto")
    assert 1 <= len(auto) < 20 and auto[0].path.endswith("green.png")


@pytest.mark.slow  # several seconds: `.ci/run` runs it, a plain `pytest` does not
def test_concurrent_reads_from_threads(engine) -> None:
    eng, _ = engine
    expected = [h.id for h in eng.search("red", k=5)]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                assert [h.id for h in eng.search("red", k=5)] == expected
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_exports(engine, tmp_path: Path) -> None:
    eng, _ = engine
    hits = eng.search("blue", k=3)
    csv_text = hits_to_csv(hits)
    assert csv_text.splitlines()[0] == "rank,score,kind,id,path,text" and len(csv_text.splitlines()) == 4
    links = link_hits(hits, tmp_path / "links")
    assert [os.readlink(link) for link in links] == [h.path for h in hits] and links[0].name.startswith("01_")
    page = write_contact_sheet(hits, tmp_path / "sheet.html", "blue").read_text()
    assert page.count("data:image/jpeg;base64,") == 3 and "blue.png" in page


def test_rerank_building_blocks() -> None:
    vecs = np.eye(4, dtype=np.float32)
    vecs[1] = vecs[0]  # a duplicate
    assert fold_duplicates(np.arange(4), vecs, 0.97)[1].tolist() == [0, 2, 3]
    order = maximal_marginal_relevance(np.array([1.0, 0.99, 0.5, 0.1]), vecs, 3, lam=0.5)
    assert order.tolist()[:2] == [0, 2]
    # a hub (candidate 0) close to every bank query loses its lead after QB-Norm
    scores = np.array([0.80, 0.78])
    bank = np.array([[0.9, 0.1], [0.85, 0.2], [0.9, 0.3]])
    normalised = querybank_normalise(scores, bank, beta=10.0)
    assert np.argmax(normalised) == 1
    assert abs(normalised.mean() - scores.mean()) < 1e-9  # still on the cosine scale
    assert np.array_equal(querybank_normalise(scores, bank[:0], beta=10.0), scores)


def test_photo_only_filters_are_refused_when_searching_texts(tmp_path: Path, photo_dir: Path) -> None:
    """Bug 5: --after, --ext and --min-size were silently ignored for --target text."""
    from typer.testing import CliRunner

    from xmodal.cli.app import app
    from xmodal.indexer.text_indexing import TextIndexer

    index = tmp_path / "idx"
    Indexer(index, model=fake_model()).add_paths([photo_dir])
    TextIndexer(index, model=fake_model()).add_texts(
        [(str(tmp_path / "notes.txt"), "red"), (str(tmp_path / "notes.txt"), "blue")]
    )
    with SearchEngine.open(index, model=fake_model()) as eng:
        for refused in (
            SearchFilter(after=parse_date("2020-01-01")),
            SearchFilter(extensions=("jpg",)),
            SearchFilter(min_width=10, min_height=10),
        ):
            with pytest.raises(InvalidQueryError, match="photos only"):
                eng.search("red", k=2, target="text", filters=refused)
        assert len(eng.search("red", k=2, target="text", filters=SearchFilter(under=tmp_path))) == 2  # --under applies
        assert eng.search("red", k=2, filters=SearchFilter(extensions=("jpg",)))[0].path.endswith("red.jpg")
    for option in (["--after", "2020-01-01"], ["--ext", "jpg"], ["--min-size", "10x10"]):
        result = CliRunner().invoke(app, ["search", "red", "--target", "text", "--index", str(index), *option])
        lines = [line for line in result.output.splitlines() if line]
        assert (
            result.exit_code == 2
            and len(lines) == 1
            and lines[0].startswith("xmodal: error:")
            and option[0] in lines[0]
        ), result.output


def test_a_date_is_the_start_of_the_period_it_names_whatever_today_is() -> None:
    """Issue 24: `--after 2023` was 2023-12-07 on 7 December (dateutil fills the parts left out from today)."""
    assert parse_date("2023") == datetime(2023, 1, 1)
    assert parse_date("2023-06") == parse_date("June 2023") == datetime(2023, 6, 1)
    assert parse_date("2023-06-15") == parse_date("15 June 2023") == datetime(2023, 6, 15)
    assert parse_date("2023-06-15T14:30") == datetime(2023, 6, 15, 14, 30)
    for yearless in ("June 5", "15"):
        with pytest.raises(InvalidQueryError, match="year"):
            parse_date(yearless)
    with pytest.raises(InvalidQueryError):
        SearchFilter(min_width=2**40)

"""The second stage (search.rerank.pipeline) with the fake encoder: what it reads, what it keeps, when it runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.text_indexing import TextIndexer
from xmodal.search import SearchEngine
from xmodal.search.rerank import pipeline, qbnorm
from xmodal.search.rerank.stages import RerankOptions


@pytest.fixture
def both_kinds(tmp_path: Path, photo_dir: Path):
    index = tmp_path / "idx"
    Indexer(index, model=fake_model()).add_paths([photo_dir])
    TextIndexer(index, model=fake_model()).add_texts([("t", "red"), ("t", "green"), ("t", "blue"), ("t", "yellow")])
    with SearchEngine.open(index, model=fake_model()) as engine:
        yield engine, index, photo_dir


def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_candidates_are_scored_once_and_sql_is_read_only_when_a_stage_needs_vectors(both_kinds, monkeypatch) -> None:
    """Bug 7: the second stage re-scored every candidate from SQL rows after FAISS had scored them."""
    engine, _, _ = both_kinds
    reads = _count_calls(monkeypatch, engine.store.metadata, "vectors")
    query = engine.embed_query("red")[None]
    first = engine.search_vectors(query, 4, rerank=False)
    plain = engine.search_vectors(query, 4, rerank=RerankOptions(hubness=False, learned=False))
    assert reads == []  # nothing to re-score: no vector is read again
    np.testing.assert_array_equal(plain[0], first[0])  # the first stage's exact scores, as they were
    np.testing.assert_array_equal(plain[1], first[1])
    engine.search_vectors(query, 4, rerank=RerankOptions(hubness=False, learned=False, diverse=0.5))
    assert len(reads) == 1  # MMR needs the candidates' vectors: one read for the whole batch


def test_query_banks_are_kept_per_direction_and_follow_the_index(both_kinds, monkeypatch) -> None:
    """Bug 4: one cached bank for both directions (rebuilt at every switch), keyed by a row count."""
    engine, index, photos = both_kinds
    captions = _count_calls(monkeypatch, qbnorm, "text_bank")
    photo_banks = _count_calls(monkeypatch, qbnorm, "photo_bank")
    for _ in range(3):
        engine.search_text("red", k=2, target="image")
        engine.search_image(photos / "red.jpg", k=2, target="text")
    assert (len(captions), len(photo_banks)) == (1, 1)
    # The same number of photos, one of them changed: the image→text bank follows.
    make_image(photos / "red.jpg", COLOURS["blue"], size=(70, 50))
    assert Indexer(index, model=fake_model()).add_paths([photos]).updated == 1
    captions.clear()  # (the Indexer prepares the caption bank for searches itself)
    engine.search_image(photos / "red.jpg", k=2, target="text")
    assert len(photo_banks) == 2
    bank = engine.second_stage.banks.bank("text")
    assert bank is not None and len(bank) == 4
    blue = engine.embed_query(photos / "red.jpg")
    assert np.isclose(np.max(bank @ blue), 1.0, atol=1e-5)  # the new vector is in the bank
    engine.search_text("red", k=2, target="image")
    assert captions == []  # the caption bank depends on the model only


def test_hubness_correction_only_across_modalities(both_kinds, monkeypatch) -> None:
    """QB-Norm's banks hold typical queries of the other kind, so same-kind searches skip it."""
    engine, _, photos = both_kinds
    calls = _count_calls(monkeypatch, pipeline, "querybank_normalise")
    corrections = _count_calls(monkeypatch, pipeline, "querybank_correction")

    def normalised(search) -> bool:  # noqa: ANN001
        calls.clear()
        corrections.clear()
        engine.second_stage.forget()  # per-item corrections are kept: start from none
        search()
        return bool(calls or corrections)

    image_id = engine.search_text("red", k=1)[0].id
    assert normalised(lambda: engine.search_text("red", k=2, target="image"))
    assert normalised(lambda: engine.search_image(photos / "red.jpg", k=2, target="text"))
    assert not normalised(lambda: engine.search_text("red", k=2, target="text"))
    assert not normalised(lambda: engine.search_texts(["red"], k=2, target="text"))
    assert not normalised(lambda: engine.similar(image_id, k=2))
    assert not normalised(lambda: engine.search_image(photos / "red.jpg", k=2))


def test_kept_corrections_give_the_scores_of_a_fresh_computation(both_kinds) -> None:
    engine, _, _ = both_kinds
    queries = engine.embed_texts(["red", "green blue", "yellow", "red green"])
    first = engine.search_vectors(queries, 4, query_kind="text")
    again = engine.search_vectors(queries, 4, query_kind="text")  # corrections now come from memory
    engine.second_stage.forget()
    one_by_one = [engine.search_vectors(q[None], 4, query_kind="text") for q in queries]
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_allclose(first[0], again[0], atol=1e-6)
    for row, (scores, ids) in enumerate(one_by_one):
        np.testing.assert_array_equal(ids[0], first[1][row])
        np.testing.assert_allclose(scores[0], first[0][row], atol=1e-6)

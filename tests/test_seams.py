"""The pipeline's public seams: sources of work items, per-item signals, one model-vs-index check."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.errors import ModelMismatchError
from xmodal.indexer.listing import read_listing
from xmodal.indexer.signals import DEFAULT_SIGNALS, EmbeddingSignal, Signal
from xmodal.indexer.sources import FolderWalk, ListedFiles, Source
from xmodal.indexer.store.checking import check_index
from xmodal.indexer.text_indexing import TextIndexer
from xmodal.search import SearchEngine
from xmodal.search.stats import index_info

OTHER = "ViT-B-32:openai"  # never loaded here: each refusal comes before any model is loaded


def _indexed(tmp_path: Path, photo_dir: Path) -> Path:
    index = tmp_path / "idx"
    Indexer(index, model=fake_model()).add_paths([photo_dir])
    return index


def test_sources_walk_and_listing_index_the_same(tmp_path: Path, photo_dir: Path) -> None:
    walk = FolderWalk.of([photo_dir])
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(item.path) for item in walk) + "\n")
    listed = ListedFiles.of(read_listing(listing), [photo_dir])
    assert isinstance(walk, Source) and isinstance(listed, Source)
    by_walk = Indexer(tmp_path / "a", model=fake_model()).add_from(walk)
    by_listing = Indexer(tmp_path / "b", model=fake_model()).add_from(listed)
    assert by_walk.new == by_listing.new == 4
    assert index_info(tmp_path / "a")["images"] == index_info(tmp_path / "b")["images"] == 4


def test_info_and_check_know_the_signals(tmp_path: Path, photo_dir: Path) -> None:
    index = _indexed(tmp_path, photo_dir)
    signal: Signal = EmbeddingSignal()
    assert DEFAULT_SIGNALS and all(s.name for s in DEFAULT_SIGNALS)
    signals = index_info(index)["signals"]
    assert signals["embedding"] == {"vectors": 4, "tower_features": 0}  # type: ignore[index]  # the fake has none
    assert signals["facts"]["photos"] == signals["facts"]["dated"] == 4  # type: ignore[index]
    assert signals["photo_text"] == {  # flat colours
        "photos_read": 4,
        "photos_with_text": 0,
        "text_failures": 0,
        "frames_read": 0,
        "frames_with_text": 0,
        "to_read": 0,
    }
    assert signals["frames"] == {"videos": 0, "frames": 0}  # type: ignore[index]
    assert index_info(index, signals=())["signals"] == {}
    assert check_index(index, signals=(signal,)).ok


def test_one_model_check_refuses_another_model_everywhere_before_loading_it(tmp_path: Path, photo_dir: Path) -> None:
    index = _indexed(tmp_path, photo_dir)
    messages = []
    for attempt in (
        lambda: Indexer(index, model=OTHER).add_paths([photo_dir]),
        lambda: SearchEngine.open(index, model=OTHER),
        lambda: TextIndexer(index, model=OTHER).add_texts([("notes", "a red door")]),
    ):
        with pytest.raises(ModelMismatchError) as refused:
            attempt()
        messages.append(str(refused.value))
    assert len(set(messages)) == 1 and "built with model 'fake-colour:test', not 'ViT-B-32:openai'" in messages[0]
    report = check_index(index, model=OTHER)
    assert report.model_problems == messages[:1]


def test_a_model_object_of_another_dimension_is_refused(tmp_path: Path, photo_dir: Path) -> None:
    index = _indexed(tmp_path, photo_dir)
    wider = fake_model()
    wider.dim = 64
    with pytest.raises(ModelMismatchError, match="dim 32"):
        SearchEngine.open(index, model=wider)

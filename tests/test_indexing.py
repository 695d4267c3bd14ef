"""Incremental indexing with the fake encoder: new, unchanged, edited, moved, deleted, failed."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.errors import ModelMismatchError
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import ImageRow
from xmodal.search import SearchEngine

pytestmark = pytest.mark.usefixtures("db_backend")  # each test on SQLite and on PostgreSQL


def _index(index_dir: Path, *paths: Path):
    return Indexer(index_dir, model=fake_model()).add_paths(paths)


def _rows(index_dir: Path) -> dict[str, ImageRow]:
    store = IndexStore.open(index_dir)
    try:
        return {Path(r.path).name: r for r in store.metadata.image_rows_under([], with_vectors=True)}
    finally:
        store.close()


def test_first_run_indexes_every_photo_recursively(tmp_path: Path, photo_dir: Path) -> None:
    summary = _index(tmp_path / "idx", photo_dir)
    assert (summary.new, summary.failed, summary.unchanged) == (4, 0, 0)
    assert set(_rows(tmp_path / "idx")) == {"red.jpg", "green.png", "blue.webp", "yellow.bmp"}


def test_unchanged_files_are_not_decoded_again(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    summary = _index(tmp_path / "idx", photo_dir)
    assert (summary.new, summary.updated, summary.unchanged, summary.embedded) == (0, 0, 4, 0)


def test_files_named_one_by_one_are_compared_by_path(tmp_path: Path, photo_dir: Path) -> None:
    files = [photo_dir / "red.jpg", photo_dir / "sub" / "green.png"]
    assert _index(tmp_path / "idx", *files).new == 2
    again = _index(tmp_path / "idx", *files, photo_dir / "yellow.bmp")
    assert (again.new, again.unchanged, again.removed) == (1, 2, 0)
    (photo_dir / "red.jpg").unlink()  # a named file that is gone is not a root: nothing is removed
    assert _index(tmp_path / "idx", photo_dir / "sub" / "green.png").unchanged == 1
    assert set(_rows(tmp_path / "idx")) == {"red.jpg", "green.png", "yellow.bmp"}


def test_failures_of_files_named_one_by_one_are_re_decided_by_path(tmp_path: Path, photo_dir: Path) -> None:
    from sqlalchemy import select

    from xmodal.indexer.store.schema import FailureRow

    def failures() -> set[str]:
        store = IndexStore.open(tmp_path / "idx")
        try:
            with store.metadata.session() as s:
                return {Path(p).name for p in s.scalars(select(FailureRow.path))}
        finally:
            store.close()

    broken, other = photo_dir / "broken.jpg", photo_dir / "sub" / "other.jpg"
    broken.write_bytes(b"not a photo")
    other.write_bytes(b"not a photo either")
    assert _index(tmp_path / "idx", broken, other).failed == 2
    make_image(broken, COLOURS["blue"])  # mended
    assert _index(tmp_path / "idx", broken).new == 1
    assert failures() == {"other.jpg"}  # only the file named this time was re-decided


def test_edited_file_is_reembedded_in_place(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    before = _rows(tmp_path / "idx")["red.jpg"]
    target = photo_dir / "red.jpg"
    make_image(target, COLOURS["blue"], size=(80, 60))
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    summary = _index(tmp_path / "idx", photo_dir)
    assert (summary.updated, summary.unchanged) == (1, 3)
    after = _rows(tmp_path / "idx")["red.jpg"]
    assert after.id == before.id
    assert after.vector != before.vector and (after.width, after.height) == (80, 60)


def test_moved_file_keeps_its_vector_and_id(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    before = _rows(tmp_path / "idx")["green.png"]
    (photo_dir / "elsewhere").mkdir()
    shutil.move(photo_dir / "sub" / "green.png", photo_dir / "elsewhere" / "renamed.png")
    summary = _index(tmp_path / "idx", photo_dir)
    assert (summary.moved, summary.new, summary.removed, summary.embedded) == (1, 0, 0, 0)
    after = _rows(tmp_path / "idx")["renamed.png"]
    assert after.id == before.id and after.vector == before.vector
    assert "green.png" not in _rows(tmp_path / "idx")


def test_deleted_file_leaves_index_and_search(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    (photo_dir / "yellow.bmp").unlink()
    summary = _index(tmp_path / "idx", photo_dir)
    assert summary.removed == 1
    engine = SearchEngine.open(tmp_path / "idx", model=fake_model())
    hits = engine.search_text("yellow", k=10)
    assert len(hits) == 3 and all("yellow" not in h.path for h in hits)


def test_indexing_another_folder_keeps_the_first(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir / "sub")
    summary = _index(tmp_path / "idx", photo_dir / "red.jpg")
    assert summary.removed == 0
    assert set(_rows(tmp_path / "idx")) == {"green.png", "blue.webp", "red.jpg"}


def test_hidden_symlinks_fifos_and_bad_files(tmp_path: Path, photo_dir: Path) -> None:
    make_image(photo_dir / ".hidden" / "secret.jpg", COLOURS["red"])
    make_image(photo_dir / ".dotfile.jpg", COLOURS["red"])
    os.symlink(photo_dir / "red.jpg", photo_dir / "link-to-red.jpg")
    os.symlink(photo_dir, photo_dir / "sub" / "loop")  # a link back up the tree
    os.symlink(photo_dir / "missing.jpg", photo_dir / "broken.jpg")
    os.mkfifo(photo_dir / "pipe.jpg")
    (photo_dir / "notes.png").write_text("not an image")
    (photo_dir / "empty.jpg").write_bytes(b"")
    summary = _index(tmp_path / "idx", photo_dir)
    assert summary.new == 4
    reasons = dict(summary.failures)
    assert set(Path(p).name for p in reasons) == {"broken.jpg", "pipe.jpg", "notes.png", "empty.jpg"}
    assert "FIFO" in reasons[str(photo_dir / "pipe.jpg")]


def test_model_mismatch_is_refused(tmp_path: Path, photo_dir: Path) -> None:
    from tests.fakes import FakeTowers
    from xmodal.indexer.models.embedding import EmbeddingModel
    from xmodal.indexer.models.spec import ModelSpec

    _index(tmp_path / "idx", photo_dir)
    other = EmbeddingModel(ModelSpec("another", pretrained="x"), FakeTowers(), None)
    with pytest.raises(ModelMismatchError):
        Indexer(tmp_path / "idx", model=other).add_paths([photo_dir])
    with pytest.raises(ModelMismatchError):
        SearchEngine.open(tmp_path / "idx", model=other)


def test_search_by_text_and_by_image(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    engine = SearchEngine.open(tmp_path / "idx", model=fake_model())
    top = engine.search_text("blue", k=2)
    assert Path(top[0].path).name == "blue.webp" and top[0].kind == "image"
    assert top[0].score > top[1].score
    query = make_image(tmp_path / "query.png", (40, 190, 50))
    assert Path(engine.search_image(query, k=1)[0].path).name == "green.png"


def test_faiss_cache_is_rebuilt_when_stale(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    (tmp_path / "idx" / "images.faiss").write_bytes(b"garbage")
    engine = SearchEngine.open(tmp_path / "idx", model=fake_model())
    assert len(engine.search_text("red", k=10)) == 4
    vectors = engine.store.vectors("image")
    ids, stored = engine.store.metadata.vectors(ImageRow)
    scores, found = vectors.search(stored[:1], 1)
    assert found[0, 0] == ids[0] and np.isclose(scores[0, 0], 1.0, atol=1e-5)


def test_a_missing_root_removes_nothing(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    shutil.move(photo_dir, tmp_path / "unmounted")
    summary = _index(tmp_path / "idx", photo_dir)
    assert summary.removed == 0 and summary.offline_roots == [str(photo_dir)]
    assert summary.failed == 0  # an offline root, reported as such; a root never indexed is a failure
    assert len(_rows(tmp_path / "idx")) == 4
    assert _index(tmp_path / "idx", tmp_path / "typo").failed == 1


def test_any_sqlalchemy_url_is_recorded_for_later_opens(tmp_path: Path, photo_dir: Path, db_backend) -> None:
    if db_backend.is_postgres:
        pytest.skip("$XMODAL_DB_URL (set for PostgreSQL) overrides a recorded URL: this one is about SQLite URLs")
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'meta.sqlite'}"
    (tmp_path / "elsewhere").mkdir()
    Indexer(tmp_path / "idx", model=fake_model(), db_url=url).add_paths([photo_dir])
    assert (tmp_path / "elsewhere" / "meta.sqlite").is_file() and not (tmp_path / "idx" / "index.db").exists()
    engine = SearchEngine.open(tmp_path / "idx", model=fake_model())  # finds the URL in xmodal.json
    assert len(engine.search_text("red", k=10)) == 4


def test_other_weights_under_the_same_name_are_refused(tmp_path: Path) -> None:
    store = IndexStore.open(tmp_path / "idx", create=True)
    try:
        store.check_model("xmodal-lite", 384, "aaaa")
        store.check_model("xmodal-lite", 384, "aaaa")
        with pytest.raises(ModelMismatchError, match="other weights"):
            store.check_model("xmodal-lite", 384, "bbbb")
    finally:
        store.close()

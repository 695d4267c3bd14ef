"""FAISS caches are local to each index folder and catch up with the shared database: another
folder (machine) builds its own cache from SQL once, then applies only the rows written and
deleted since its stamp, through the bulk writers and through plain ORM writes alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.backends import Backend
from tests.conftest import make_image
from tests.fakes import fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.store.checking import check_index
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import ImageRow, utcnow, vector_to_blob
from xmodal.indexer.store.vector_index import VectorIndex


def _photos(root: Path, start: int, count: int) -> Path:
    for i in range(start, start + count):
        make_image(root / f"p{i:02d}.png", ((i * 53) % 256, (i * 97) % 256, (i * 31) % 256), size=(32, 32))
    return root


def _assert_matches_sql(store: IndexStore) -> None:
    index = store.vectors("image")
    ids, vecs = store.metadata.vectors(ImageRow)
    cached_ids, cached = index.vectors()
    order = np.argsort(cached_ids)
    assert np.array_equal(cached_ids[order], ids)
    assert np.allclose(cached[order], vecs)


def test_another_folder_catches_up_incrementally(tmp_path: Path, db_backend: Backend) -> None:
    url = db_backend.url or f"sqlite:///{tmp_path / 'shared.db'}"  # SQLite: one file, two folders
    photos = _photos(tmp_path / "photos", 0, 12)
    Indexer(tmp_path / "a", model=fake_model(), db_url=url).add_paths([photos])

    reader = IndexStore.open(tmp_path / "b", db_url=url)  # a new folder for an index in the database
    try:
        first = reader.vectors("image")
        assert len(first) == 12 and (tmp_path / "b" / "images.faiss").is_file()  # built from SQL, saved
        stamp = VectorIndex.read_stamp(tmp_path / "b" / "images.faiss")
        assert stamp["origin"] == reader.metadata.get_meta()["database_id"]

        # the writer adds 5 photos and loses 3
        _photos(photos, 12, 5)
        for gone in sorted(photos.iterdir())[:3]:
            gone.unlink()
        summary = Indexer(tmp_path / "a", model=fake_model(), db_url=url).add_paths([photos])
        assert (summary.new, summary.removed) == (5, 3)

        # from here on a full load would be a failure: only the changes may be read
        loads = reader.full_loads
        caught_up = reader.vectors("image")
        assert caught_up is first  # caught up in place: no copy, nothing retired
        assert len(caught_up) == 14 and reader._last_catch_up == 5 + 3 and reader.full_loads == loads
        _assert_matches_sql(reader)

        # plain ORM writes are tracked too: a row added, one changed, one deleted
        with reader.metadata.session() as s, s.begin():
            extra = make_image(tmp_path / "extra.png", (1, 2, 3))
            vector = vector_to_blob(np.eye(32, dtype=np.float32)[5])
            s.add(ImageRow(path=str(extra), size=1, mtime_ns=1, content_hash="x", width=1, height=1,
                           model=str(fake_model().spec), indexed_at=utcnow(), vector=vector))  # fmt: skip
            rows = s.query(ImageRow).order_by(ImageRow.id).all()
            rows[0].vector = vector_to_blob(np.eye(32, dtype=np.float32)[7])
            s.delete(rows[1])
        assert len(reader.vectors("image")) == 14 and reader.full_loads == loads
        _assert_matches_sql(reader)
    finally:
        reader.close()

    # a later process in folder b starts from its saved (older) cache and catches up the same way
    again = IndexStore.open(tmp_path / "b", db_url=url)
    try:
        _assert_matches_sql(again)
    finally:
        again.close()
    assert check_index(tmp_path / "a", url).ok and check_index(tmp_path / "b", url).ok


def test_a_cache_of_another_database_is_not_trusted(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos", 0, 6)
    Indexer(tmp_path / "a", model=fake_model()).add_paths([photos])
    Indexer(tmp_path / "b", model=fake_model()).add_paths([_photos(tmp_path / "other", 10, 6)])
    # same generation numbers, other rows: b's cache copied into a must be rebuilt, not used
    for suffix in ("", ".json"):
        (tmp_path / "a" / f"images.faiss{suffix}").write_bytes((tmp_path / "b" / f"images.faiss{suffix}").read_bytes())
    report = check_index(tmp_path / "a")
    assert report.ok and any("another database" in note for note in report.stale_caches)
    store = IndexStore.open(tmp_path / "a")
    try:
        _assert_matches_sql(store)
    finally:
        store.close()
    assert not check_index(tmp_path / "a").stale_caches  # the rebuilt cache was saved

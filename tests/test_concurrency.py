"""Concurrent use: searches while another process indexes always succeed and see a consistent index;
a second writer is refused with a clear message; a lock held by a SIGKILLed process is not stuck."""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from tests.conftest import make_image
from tests.fakes import fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.errors import IndexLockedError
from xmodal.indexer.store.checking import check_index
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import ImageRow
from xmodal.search import SearchEngine

_CTX = multiprocessing.get_context("forkserver")
N_IMAGES = 48


def _writer(index_dir: str, photos: str) -> None:
    """An index run paced like a real model, saving its FAISS cache after every batch."""
    import xmodal.indexer.indexing as indexing
    from tests.fakes import fake_model
    from xmodal.indexer import Indexer

    indexing._SAVE_INTERVAL_S = 0.0
    model = fake_model()
    embed = model.embed_pixels

    def slow_embed(pixels):  # noqa: ANN001, ANN202
        time.sleep(0.03)
        return embed(pixels)

    model.embed_pixels = slow_embed  # type: ignore[method-assign]
    Indexer(index_dir, model=model, batch_size=2, workers=2).add_paths([photos])


def _lock_holder(index_dir: str, ready) -> None:  # noqa: ANN001
    from xmodal.indexer.store.index_store import IndexStore

    store = IndexStore.open(index_dir)
    with store.write_lock():
        ready.set()
        time.sleep(120)


def _photos(root: Path) -> Path:
    for i in range(N_IMAGES):
        make_image(
            root / f"g{i % 3}" / f"p{i:02d}.png", ((i * 53) % 256, (i * 97) % 256, (i * 31) % 256), size=(32, 32)
        )
    return root


def _row_ids(store: IndexStore) -> set[int]:
    with store.metadata.session() as s:
        return set(s.scalars(select(ImageRow.id)))


@pytest.mark.slow
def test_searches_during_an_index_run_see_a_consistent_index(tmp_path: Path, db_backend) -> None:  # noqa: ANN001
    photos = _photos(tmp_path / "photos")
    index_dir = tmp_path / "idx"
    Indexer(index_dir, model=fake_model()).add_paths([photos / "g0"])  # something to search from the start
    writer = _CTX.Process(target=_writer, args=(str(index_dir), str(photos)), daemon=True)
    errors: list[BaseException] = []
    stats = {"searches": 0, "sizes": set()}
    done = threading.Event()

    def shared_engine_reader() -> None:
        engine = SearchEngine.open(index_dir, model=fake_model())
        try:
            while not done.is_set():
                hits = engine.search_text("red green", k=5)
                assert hits and all(h.path for h in hits)
                stats["searches"] += 1
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            engine.close()

    def fresh_engine_reader() -> None:
        query = fake_model().embed_texts(["blue"])
        try:
            while not done.is_set():
                with SearchEngine.open(index_dir, model=fake_model()) as engine:
                    before = len(engine.store.vectors("image"))  # the saved cache caught up, or built from SQL
                    scores, ids = engine.search_vectors(query, k=200, rerank=False)
                    found = ids[ids >= 0]
                    index = engine.store.vectors("image")  # each search catches up with the writer
                    rows = _row_ids(engine.store)
                    # every vector it searched has its row (the writer only adds here) ...
                    assert set(found.tolist()) <= rows, set(found.tolist()) - rows
                    # ... and the index is whole: as many hits as vectors, none twice
                    assert before <= len(found) <= len(index) and len(found) == len(set(found.tolist()))
                    assert np.all(np.diff(scores[0][: len(found)]) <= 1e-6)
                    hits = engine.search_text("blue", k=3)
                    assert len(hits) == min(3, len(index))
                    stats["sizes"].add(len(index))
                    stats["searches"] += 1
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    readers = [threading.Thread(target=shared_engine_reader), threading.Thread(target=fresh_engine_reader)]
    writer.start()
    for r in readers:
        r.start()
    writer.join(120)
    done.set()
    for r in readers:
        r.join(30)
    assert writer.exitcode == 0
    assert not errors, repr(errors[0])
    assert stats["searches"] > 10
    assert len(stats["sizes"]) > 2, stats["sizes"]  # the readers saw the index grow while it was written
    assert check_index(index_dir).ok
    with SearchEngine.open(index_dir, model=fake_model()) as engine:
        assert len(engine.store.vectors("image")) == N_IMAGES


@pytest.mark.slow  # several seconds: `.ci/run` runs it, a plain `pytest` does not
def test_second_writer_is_refused_and_a_killed_writer_leaves_no_stuck_lock(tmp_path: Path, db_backend) -> None:  # noqa: ANN001
    photos = _photos(tmp_path / "photos")
    index_dir = tmp_path / "idx"
    Indexer(index_dir, model=fake_model()).add_paths([photos / "g0"])
    ready = _CTX.Event()
    holder = _CTX.Process(target=_lock_holder, args=(str(index_dir), ready), daemon=True)
    holder.start()
    assert ready.wait(60)
    try:
        with pytest.raises(IndexLockedError, match="another xmodal run is writing"):
            Indexer(index_dir, model=fake_model()).add_paths([photos])
        with pytest.raises(IndexLockedError):
            check_index(index_dir, repair=True)
        assert check_index(index_dir).ok  # checking without repair reads only: allowed

        from typer.testing import CliRunner

        from xmodal.cli.app import app

        result = CliRunner().invoke(app, ["index", str(photos), "--index", str(index_dir)])
        assert result.exit_code == 6
        assert "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("xmodal: error: another xmodal run is writing")
        # searches are never blocked by a writer
        with SearchEngine.open(index_dir, model=fake_model()) as engine:
            assert engine.search_text("red", k=3)
    finally:
        holder.kill()  # SIGKILL: the kernel drops its flock, PostgreSQL its advisory lock
        holder.join(30)
    assert holder.exitcode == -signal.SIGKILL
    started = time.perf_counter()
    summary = Indexer(index_dir, model=fake_model()).add_paths([photos])
    assert time.perf_counter() - started < 30
    assert summary.new == N_IMAGES - len(list((photos / "g0").iterdir()))
    assert check_index(index_dir).ok

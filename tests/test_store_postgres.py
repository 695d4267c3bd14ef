"""PostgreSQL as the shared store: two writers on one database (one refused, nothing corrupt),
a reader on another machine's folder that builds its own FAISS cache and catches up with the
writer's rows, a lock released by the server when its writer dies, and passwords kept out of
output, errors and logs."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import make_image
from tests.fakes import fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.store.checking import check_index
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import ImageRow

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(
    ["torch", "faiss", "sqlalchemy", "psycopg", "PIL.Image", "xmodal.indexer.indexing", "xmodal.search", "tests.fakes"]
)
N_IMAGES = 40


def _photos(root: Path) -> Path:
    for i in range(N_IMAGES):
        make_image(
            root / f"g{i % 4}" / f"p{i:02d}.png", ((i * 53) % 256, (i * 97) % 256, (i * 31) % 256), size=(32, 32)
        )
    return root


def _writer(index_dir: str, photos: str, url: str, started, pace: float, go=None) -> None:  # noqa: ANN001
    """An index run (exit 6 when another writer holds the database, as the CLI does); with `go`,
    it starts when told (its imports done)."""
    from tests.fakes import fake_model
    from xmodal.indexer import Indexer
    from xmodal.indexer.errors import IndexLockedError

    if go is not None:
        go.wait(60)
    model = fake_model()
    embed = model.embed_pixels

    def slow_embed(pixels):  # noqa: ANN001, ANN202
        time.sleep(pace)
        return embed(pixels)

    model.embed_pixels = slow_embed  # type: ignore[method-assign]
    try:
        Indexer(
            index_dir, model=model, db_url=url, batch_size=2, workers=1, on_progress=lambda p: started.set()
        ).add_paths([photos])
    except IndexLockedError:
        os._exit(6)


def _reader(index_dir: str, url: str, queue, go) -> None:  # noqa: ANN001
    """Another machine: its own folder, the same database; one engine kept open while the writer writes."""
    from tests.fakes import fake_model
    from xmodal.search import SearchEngine

    go.wait(60)
    sizes = []
    with SearchEngine.open(index_dir, model=fake_model(), db_url=url) as engine:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sizes.append(len(engine.search_text("red", k=500, rerank=False)))
            if sizes[-1] == N_IMAGES:
                break
            time.sleep(0.05)
    queue.put(sizes)


@pytest.mark.slow
def test_two_writers_one_database_and_a_reader_elsewhere(tmp_path: Path, pg_url: str) -> None:
    photos = _photos(tmp_path / "photos")
    Indexer(tmp_path / "a", model=fake_model(), db_url=pg_url).add_paths([photos / "g0"])  # the index exists
    started_a, started_b, go = _CTX.Event(), _CTX.Event(), _CTX.Event()
    queue = _CTX.Queue()
    writer_a = _CTX.Process(
        target=_writer, args=(str(tmp_path / "a"), str(photos), pg_url, started_a, 0.25), daemon=True
    )
    writer_b = _CTX.Process(
        target=_writer, args=(str(tmp_path / "b"), str(photos), pg_url, started_b, 0.0, go), daemon=True
    )
    reader = _CTX.Process(target=_reader, args=(str(tmp_path / "c"), pg_url, queue, go), daemon=True)
    writer_b.start()
    reader.start()
    writer_a.start()
    assert started_a.wait(60)  # A holds the database's writer lock and is writing
    go.set()  # now B (another folder: another machine, the same database) tries, and the reader reads
    writer_b.join(60)
    assert writer_a.is_alive()
    assert writer_b.exitcode == 6  # refused while A writes, not interleaved
    writer_a.join(120)
    assert writer_a.exitcode == 0
    sizes = queue.get(timeout=120)
    reader.join(30)
    assert reader.exitcode == 0
    assert sizes[-1] == N_IMAGES, sizes  # the reader saw all of A's rows...
    assert len(set(sizes)) > 2, sizes  # ...arriving while A wrote (its cache caught up, not just at open)
    assert (tmp_path / "c" / "images.faiss").is_file()  # the reader machine saved its own cache

    for folder in ("a", "c"):
        report = check_index(tmp_path / folder)
        assert report.ok and report.images == N_IMAGES, (folder, report.problems)
    # B again, now alone: its folder builds its cache from SQL; every photo is already there
    summary = Indexer(tmp_path / "b", model=fake_model(), db_url=pg_url).add_paths([photos])
    assert (summary.new, summary.unchanged) == (0, N_IMAGES)
    assert check_index(tmp_path / "b").ok


def _lock_holder(index_dir: str, ready) -> None:  # noqa: ANN001
    from xmodal.indexer.store.index_store import IndexStore

    store = IndexStore.open(index_dir)
    with store.write_lock():
        ready.set()
        time.sleep(120)


@pytest.mark.slow
def test_a_dead_writers_advisory_lock_is_released_by_the_server(tmp_path: Path, pg_url: str) -> None:
    from xmodal.indexer.errors import IndexLockedError

    photos = _photos(tmp_path / "photos")
    Indexer(tmp_path / "a", model=fake_model(), db_url=pg_url).add_paths([photos / "g1"])
    ready = _CTX.Event()
    holder = _CTX.Process(target=_lock_holder, args=(str(tmp_path / "a"), ready), daemon=True)
    holder.start()
    assert ready.wait(60)
    with pytest.raises(IndexLockedError):  # from another folder too: the lock is the database's
        Indexer(tmp_path / "b", model=fake_model(), db_url=pg_url).add_paths([photos])
    holder.kill()
    holder.join(30)
    assert holder.exitcode == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while True:  # the server notices the closed connection at once; allow it a moment
        try:
            summary = Indexer(tmp_path / "b", model=fake_model(), db_url=pg_url).add_paths([photos])
            break
        except IndexLockedError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert summary.new == N_IMAGES - N_IMAGES // 4


def test_the_password_never_shows(tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from typer.testing import CliRunner

    from xmodal.cli.app import app

    password = make_url(pg_url).password
    assert password
    photos = _photos(tmp_path / "photos")
    caplog.set_level(logging.DEBUG)
    Indexer(tmp_path / "idx", model=fake_model(), db_url=pg_url).add_paths([photos / "g2"])
    runner = CliRunner()
    info = runner.invoke(app, ["info", "--index", str(tmp_path / "idx"), "--json"])
    assert info.exit_code == 0 and password not in info.output
    assert "***" in info.output  # the database is named, its password masked
    wrong = pg_url.replace(password, "Wr0ng-pw-77")
    bad = runner.invoke(app, ["info", "--index", str(tmp_path / "other"), "--db-url", wrong])
    assert bad.exit_code == 4 and "Wr0ng-pw-77" not in bad.output and password not in bad.output
    assert "xmodal: error: cannot open the index database" in bad.output
    missing = runner.invoke(
        app, ["search", "red", "--index", str(tmp_path / "idx"), "--db-url", pg_url.rsplit("/", 1)[0] + "/nosuchdb"]
    )
    assert missing.exit_code == 4 and password not in missing.output
    assert password not in caplog.text
    store = IndexStore.open(
        tmp_path / "idx", db_url=pg_url.replace("postgresql+psycopg://", "postgresql://")
    )  # no driver named: psycopg 3
    try:
        assert store.db_url.startswith("postgresql+psycopg://")
        assert password not in store.db_url and password not in repr(store.metadata.engine)
        assert store.metadata.count(ImageRow) == N_IMAGES // 4
    finally:
        store.close()
    assert oct((tmp_path / "idx" / "xmodal.json").stat().st_mode & 0o777) == "0o600"  # it holds the password

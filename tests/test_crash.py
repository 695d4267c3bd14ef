"""Crash safety: an index run really SIGKILLed at seeded random moments, resumed each time, ends
equal to an uninterrupted run (same rows, same vector bytes, same failures, same search results),
and `check_index` finds SQL and FAISS in agreement.

Kills follow the run's progress (photos embedded), not the clock, so they land mid-run however fast
indexing gets. Child runs are forked from a multiprocessing fork server that has imported torch,
FAISS and the indexer once, so each run starts in milliseconds.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_image
from tests.fakes import fake_model
from xmodal.indexer.store.checking import check_index
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import FailureRow, ImageRow
from xmodal.search import SearchEngine

N_IMAGES = 60
KILLS = 5  # kills that land inside a run
MAX_ATTEMPTS = 10  # kill attempts at most (one may come after a short resume ended)
SEED = int(os.environ.get("XMODAL_CRASH_SEED", "20240611"))  # another seed: another set of moments
QUERIES = ["red", "green", "blue", "yellow", "red blue", "a dark photo"]

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(
    ["torch", "faiss", "sqlalchemy", "PIL.Image", "xmodal.indexer.indexing", "tests.fakes", "tests.test_crash"]
)


# --- the child ------------------------------------------------------------------------------------
def _child_index(
    index_dir: str,
    photos: str,
    kill_in_save: int = 0,
    db_url: str | None = None,
    embedded: Synchronized | None = None,
) -> None:
    """One `xmodal index` run with the fake encoder. kill_in_save=N: SIGKILL itself inside the
    N-th FAISS save, after the new index file is in place but before its generation stamp.
    embedded: a shared counter of the photos this run has embedded, so a parent can kill by progress."""
    import xmodal.indexer.indexing as indexing
    import xmodal.indexer.store.saved_index as saved_index
    from tests.fakes import fake_model
    from xmodal.indexer import Indexer

    indexing._SAVE_INTERVAL_S = 0.0  # save the FAISS cache after every batch: crash windows in saves too
    model = fake_model()
    embed = model.embed_pixels

    def slow_embed(pixels):  # noqa: ANN001, ANN202 - a model's pace, so kills spread over the run
        time.sleep(0.02)
        vectors = embed(pixels)
        if embedded is not None:
            with embedded.get_lock():
                embedded.value += len(vectors)
        return vectors

    model.embed_pixels = slow_embed  # type: ignore[method-assign]
    if kill_in_save:
        real_write = saved_index._atomic_write_chunks
        saves = [0]

        def dying_write(path, chunks):  # noqa: ANN001, ANN202
            if str(path).endswith(".faiss.json"):
                saves[0] += 1
                if saves[0] == kill_in_save:
                    # a half-written temporary file of the stamp, then death
                    (Path(path).parent / f"{Path(path).name}.crash.tmp").write_bytes(b'{"generation": ')
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_write(path, chunks)

        saved_index._atomic_write_chunks = dying_write
    Indexer(index_dir, model=model, db_url=db_url, batch_size=3, workers=2).add_paths([photos])


def _noop() -> None:
    pass


def _start(
    index_dir: Path,
    photos: Path,
    kill_in_save: int = 0,
    db_url: str | None = None,
    embedded: Synchronized | None = None,
) -> multiprocessing.Process:
    args = (str(index_dir), str(photos), kill_in_save, db_url, embedded)
    proc = _CTX.Process(target=_child_index, args=args, daemon=True)
    proc.start()
    return proc


# --- helpers --------------------------------------------------------------------------------------
def _make_photos(root: Path) -> Path:
    rng = random.Random(SEED)
    colours: set[tuple[int, int, int]] = set()
    while len(colours) < N_IMAGES:
        colours.add((rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    for i, colour in enumerate(sorted(colours)):
        ext = ("jpg", "png", "webp", "bmp")[i % 4]
        make_image(
            root / f"d{i % 5}" / f"img{i:03d}.{ext}",
            colour,
            size=(48 + i, 40),
            **({"lossless": True} if ext == "webp" else {}),
        )
    (root / "d1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "d3" / "empty.png").write_bytes(b"")
    return root


def _snapshot(index_dir: Path) -> dict[str, object]:
    store = IndexStore.open(index_dir)
    try:
        with store.metadata.session() as s:
            rows = {
                r.path: (r.id, r.vector, r.size, r.mtime_ns, r.content_hash, r.width, r.height)
                for r in s.query(ImageRow)
            }
            fails = {f.path: f.reason for f in s.query(FailureRow)}
    finally:
        store.close()
    engine = SearchEngine.open(index_dir, model=fake_model())
    try:
        results = {q: [(h.path, h.score) for h in engine.search_text(q, k=8)] for q in QUERIES}
        results_plain = {q: [(h.path, h.score) for h in engine.search_text(q, k=8, rerank=False)] for q in QUERIES}
    finally:
        engine.close()
    return {"rows": rows, "failures": fails, "results": results, "results_plain": results_plain}


def _row_count(index_dir: Path) -> int:
    if not (index_dir / "xmodal.json").exists():
        return 0
    store = IndexStore.open(index_dir)
    try:
        return store.metadata.count(ImageRow)
    finally:
        store.close()


def _assert_same(got: dict, want: dict, same_ids: bool = True) -> None:
    assert set(got["rows"]) == set(want["rows"])
    for path, row in want["rows"].items():
        assert got["rows"][path][1] == row[1], f"vector bytes differ for {path}"
        assert got["rows"][path][2:] == row[2:], f"facts differ for {path}"
    # PostgreSQL's sequences are not transactional: a killed run's rows leave gaps in the ids
    assert got["rows"]
    if same_ids:
        assert {p: r[0] for p, r in got["rows"].items()} == {p: r[0] for p, r in want["rows"].items()}
    assert got["failures"] == want["failures"]
    assert got["results"] == want["results"]
    assert got["results_plain"] == want["results_plain"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_photos(tmp_path_factory.mktemp("crash") / "photos")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The database URL of the crash tests (a new database each time it is called), None for SQLite."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_server")


def _db(backend) -> str | None:  # noqa: ANN001
    return None if backend is None else backend.create_database()


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, photos: Path, backend) -> tuple[dict, float]:  # noqa: ANN001
    index_dir = tmp_path_factory.mktemp("clean") / "idx"
    warm = _CTX.Process(target=_noop)  # starts the fork server (its imports are not the run's time)
    warm.start()
    warm.join(60)
    started = time.perf_counter()
    proc = _start(index_dir, photos, db_url=_db(backend))
    proc.join(60)
    seconds = time.perf_counter() - started
    assert proc.exitcode == 0
    return _snapshot(index_dir), seconds


# --- the tests ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_runs_resume_to_the_clean_result(
    tmp_path: Path, photos: Path, clean: tuple[dict, float], backend
) -> None:  # noqa: ANN001
    want, clean_seconds = clean
    rng = random.Random(SEED)
    index_dir = tmp_path / "idx"
    url = _db(backend)  # the first run records it in the index folder
    log: list[tuple[int, float, int, int, bool]] = []  # (target, delay, rows before, after, killed mid-run)
    for _ in range(MAX_ATTEMPTS):
        if sum(1 for *_, killed in log if killed) == KILLS:
            break
        before = _row_count(index_dir)
        if before == N_IMAGES:
            break  # nothing left to interrupt
        # The kill follows the run's progress, not the clock (runs get faster): after a random number of
        # this run's photos are embedded, plus a random moment, so it lands in embedding, writing or saving.
        target = rng.randint(1, max(1, N_IMAGES - before - 1))
        delay = rng.uniform(0.0, 0.05)
        embedded = _CTX.Value("i", 0)
        proc = _start(index_dir, photos, db_url=url, embedded=embedded)
        deadline = time.monotonic() + 60
        while proc.is_alive() and embedded.value < target and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        alive = proc.is_alive()
        proc.kill()  # SIGKILL
        proc.join(30)
        killed = alive and proc.exitcode == -signal.SIGKILL
        log.append((target, round(delay, 3), before, _row_count(index_dir), killed))
        report = check_index(index_dir) if (index_dir / "xmodal.json").exists() else None
        if report is not None:  # whatever the kill left, SQL and the cache that would be used agree
            assert not (
                report.rows_without_vector
                or report.vectors_without_row
                or report.vector_mismatches
                or report.count_mismatches
            ), report
    # resume to the end
    proc = _start(index_dir, photos)
    proc.join(60)
    assert proc.exitcode == 0
    name = backend and "postgresql" or "sqlite"
    print(
        f"\ncrash test ({name}): clean run {clean_seconds:.2f} s;",
        f"kills (after photos, delay s, rows before, rows after, landed): {log}",
    )
    assert sum(1 for *_, killed in log if killed) >= 3, log  # kills really interrupted runs
    assert any(0 < after < N_IMAGES for *_, after, killed in log if killed), log  # some in the middle

    report = check_index(index_dir)
    assert report.ok, report.problems
    assert not report.stale_caches  # the finished run left a current cache...
    assert not report.leftover_files  # ...and removed the temporary files of killed saves
    _assert_same(_snapshot(index_dir), want, same_ids=backend is None)


@pytest.mark.slow
def test_kill_inside_the_faiss_save_is_repaired(
    tmp_path: Path, photos: Path, clean: tuple[dict, float], backend
) -> None:  # noqa: ANN001
    want, _ = clean
    index_dir = tmp_path / "idx"
    proc = _start(index_dir, photos, kill_in_save=4, db_url=_db(backend))  # new images.faiss written, its stamp not
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    rows = _row_count(index_dir)
    assert 0 < rows < N_IMAGES

    report = check_index(index_dir)
    assert report.ok, report.problems  # a crash state is consistent...
    assert report.leftover_files == ["images.faiss.json.crash.tmp"]  # ...with the half-written stamp's temp file
    assert report.stale_caches  # the new file with the old stamp is not trusted: rebuilt from SQL
    engine = SearchEngine.open(index_dir, model=fake_model())  # ...searches rebuild it from SQL
    try:
        assert len(engine.search_text("red", k=N_IMAGES, rerank=False)) == rows
    finally:
        engine.close()

    repaired = check_index(index_dir, repair=True)
    assert repaired.ok and repaired.repaired and not repaired.stale_caches and not repaired.leftover_files
    assert check_index(index_dir).ok

    proc = _start(index_dir, photos)
    proc.join(60)
    assert proc.exitcode == 0
    assert check_index(index_dir).ok
    _assert_same(_snapshot(index_dir), want, same_ids=backend is None)


@pytest.mark.slow
def test_repair_rebuilds_a_damaged_cache_and_drops_gone_files(tmp_path: Path, photos: Path) -> None:
    import shutil

    from xmodal.indexer.store.vector_index import VectorIndex

    local = tmp_path / "photos"
    shutil.copytree(photos / "d0", local)
    index_dir = tmp_path / "idx"
    proc = _start(index_dir, local)
    proc.join(60)
    assert proc.exitcode == 0 and check_index(index_dir).ok

    # a cache that claims the current generation but lost a vector and gained a foreign one
    store = IndexStore.open(index_dir)
    generation = int(store.metadata.get_meta()["generation:image"])
    ids, vecs = store.metadata.vectors(ImageRow)
    damaged = VectorIndex(vecs.shape[1])
    damaged.add(np.append(ids[1:], 9999), np.vstack([vecs[1:], vecs[:1]]))
    damaged.save(store.faiss_path("image"), generation)
    store.close()
    gone = sorted(local.iterdir())[0]
    gone.unlink()

    report = check_index(index_dir)
    assert not report.ok
    assert report.rows_without_vector == [f"image:{ids[0]}"]
    assert report.vectors_without_row == ["image:9999"]
    assert report.missing_files == [str(gone)]

    kept = check_index(index_dir, repair=True)  # rows of missing files are kept unless asked
    assert kept.problems == {"missing_files": [str(gone)]}
    repaired = check_index(index_dir, repair=True, prune_missing=True)
    assert repaired.ok, repaired.problems
    assert any("gone" in action for action in repaired.repaired)
    assert str(gone) not in _snapshot(index_dir)["rows"]


def test_repair_drops_unusable_rows_and_restores_the_model_record(tmp_path: Path, photos: Path) -> None:
    from xmodal.indexer import Indexer
    from xmodal.indexer.store.schema import MetaRow

    index_dir = tmp_path / "idx"
    Indexer(index_dir, model=fake_model()).add_paths([photos / "d2"])
    store = IndexStore.open(index_dir)
    with store.metadata.session() as s, s.begin():
        s.query(MetaRow).filter(MetaRow.key.in_(["model", "dim"])).delete(synchronize_session=False)
        s.query(ImageRow).order_by(ImageRow.id).first().vector = b"\x00" * 8  # type: ignore[union-attr]
    rows = store.metadata.count(ImageRow)
    store.close()
    report = check_index(index_dir)
    assert report.model_problems and not report.ok
    repaired = check_index(index_dir, repair=True)
    assert repaired.ok, repaired.problems
    assert (repaired.model, repaired.dim, repaired.images) == ("fake-colour:test", 32, rows - 1)
    summary = Indexer(index_dir, model=fake_model()).add_paths([photos / "d2"])  # the dropped row comes back
    assert (summary.new, summary.unchanged) == (1, rows - 1) and check_index(index_dir).ok

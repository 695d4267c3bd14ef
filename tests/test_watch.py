"""Watch mode: photos dropped into, changed in, moved within and removed from a watched folder are
found (or no longer found) by search within seconds, with one Indexer (one model load)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from xmodal.indexer.indexing import Indexer
from xmodal.indexer.store.checking import check_index
from xmodal.indexer.watching import FolderWatcher, WatchRun, index_roots, minimal_folders
from xmodal.search.engine import SearchEngine
from xmodal.search.stats import index_info


def _paths(index: Path) -> set[str]:
    """Names of every indexed photo, found by search (an index not made yet has none)."""
    try:
        with SearchEngine.open(index, model=fake_model()) as engine:
            return {Path(h.path).name for h in engine.search_text("anything", k=100, rerank=False)}
    except Exception:  # noqa: BLE001 - not created yet, or no model recorded yet
        return set()


def _eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def test_folder_helpers() -> None:
    assert minimal_folders(["/a/b", "/a", "/c/d", "/c/d/e", "/ab"]) == ["/a", "/ab", "/c/d"]
    assert index_roots(["/p/a/x.jpg", "/p/a/b/y.jpg", "/p/c/z.jpg"]) == ["/p/a", "/p/c"]


@pytest.mark.slow
def test_watcher_keeps_the_index_current(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_image(photos / "red.jpg", COLOURS["red"])
    index = tmp_path / "index"
    model = fake_model()
    indexer = Indexer(index, model=model, workers=1)
    runs: list[WatchRun] = []
    errors: list[BaseException] = []
    watcher = FolderWatcher(indexer, [photos], debounce=0.3, max_delay=3.0, on_run=runs.append, on_error=errors.append)
    catch_up = watcher.start()  # the first run catches up with the folder as it is, in this thread
    assert catch_up is not None and catch_up.new == 1
    try:
        _eventually(lambda: _paths(index) == {"red.jpg"})

        started = time.monotonic()
        make_image(photos / "new" / "blue.png", COLOURS["blue"])
        make_image(photos / "green.png", COLOURS["green"])
        _eventually(lambda: {"blue.png", "green.png"} <= _paths(index))
        assert time.monotonic() - started < 10

        (photos / "archive").mkdir()
        shutil.move(photos / "green.png", photos / "archive" / "green.png")
        _eventually(lambda: any(r.summary.moved for r in runs))
        (photos / "red.jpg").unlink()
        _eventually(lambda: _paths(index) == {"blue.png", "green.png"})
        (photos / "notes.txt").write_text("not a photo")  # ignored: no run for it
        (photos / ".hidden.jpg").write_bytes(b"")
        time.sleep(1.0)
        assert watcher.pending == []
    finally:
        watcher.stop()
    assert not errors, errors
    assert indexer.model is model  # one model for every run
    assert check_index(index).ok
    assert catch_up.new + sum(r.summary.embedded for r in runs) == 3  # the moved photo was not embedded again
    facts = index_info(index)["signals"]["facts"]  # type: ignore[index]
    assert facts["photos"] == facts["dated"] == 2  # the watcher's runs write each photo's facts


@pytest.mark.slow  # a forkserver process holding the lock: ~40 s to tear down under load
def test_watcher_retries_while_another_process_writes(tmp_path: Path) -> None:
    import multiprocessing

    photos = tmp_path / "photos"
    make_image(photos / "red.jpg", COLOURS["red"])
    index = tmp_path / "index"
    Indexer(index, model=fake_model(), workers=1).add_paths([photos])
    ctx = multiprocessing.get_context("forkserver")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(index), ready, release), daemon=True)
    holder.start()
    assert ready.wait(60)
    errors: list[BaseException] = []
    watcher = FolderWatcher(
        Indexer(index, model=fake_model(), workers=1), [photos], debounce=0.2, retry=0.5, on_error=errors.append
    )
    watcher.start("skip")
    try:
        make_image(photos / "blue.png", COLOURS["blue"])
        _eventually(lambda: bool(errors))
        assert "another xmodal run is writing" in str(errors[0])
        release.set()
        holder.join(30)
        _eventually(lambda: "blue.png" in _paths(index))
    finally:
        watcher.stop()
        holder.kill()


def _hold_lock(index_dir: str, ready, release) -> None:  # noqa: ANN001
    from xmodal.indexer.store.index_store import IndexStore

    store = IndexStore.open(index_dir)
    with store.write_lock():
        ready.set()
        release.wait(60)

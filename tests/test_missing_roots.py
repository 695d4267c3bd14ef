"""Nothing lost to a missing drive: a root that is not there or is empty (an unmounted disk) is
offline and keeps its rows; a run missing more than `Limits.max_missing_share` removes nothing; only
`--prune-missing` (index, check --repair) and `xmodal remove` drop rows of missing files."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from xmodal.cli.app import app
from xmodal.indexer import Indexer
from xmodal.indexer.limits import Limits
from xmodal.indexer.store.checking import check_index
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import ImageRow
from xmodal.indexer.watching import FolderWatcher, WatchRun, indexed_roots


def _index(index_dir: Path, *paths: Path, **kwargs: object):  # noqa: ANN202
    return Indexer(index_dir, model=fake_model(), workers=1).add_paths(paths, **kwargs)  # type: ignore[arg-type]


def _count(index_dir: Path) -> int:
    store = IndexStore.open(index_dir)
    try:
        return store.metadata.count(ImageRow)
    finally:
        store.close()


def _empty(folder: Path) -> None:
    """What an unmounted drive leaves: the mount point, with nothing in it."""
    shutil.rmtree(folder)
    folder.mkdir()


def test_a_root_renamed_away_is_offline_and_keeps_its_rows(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    photo_dir.rename(tmp_path / "away")
    summary = _index(tmp_path / "idx", photo_dir)
    assert summary.removed == 0 and summary.offline_roots == [str(photo_dir)] and summary.kept_missing == 4
    assert summary.failed == 0  # offline is not a failure: the run says so instead
    assert _count(tmp_path / "idx") == 4


def test_an_empty_mount_point_is_offline_and_keeps_its_rows(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    _empty(photo_dir)
    summary = _index(tmp_path / "idx", photo_dir)
    assert (summary.removed, summary.offline_roots) == (0, [str(photo_dir)])
    assert _count(tmp_path / "idx") == 4
    # a run over a folder inside the offline root (as the watcher or POST /api/index makes) keeps them too
    assert _index(tmp_path / "idx", photo_dir / "sub").removed == 0
    assert _count(tmp_path / "idx") == 4
    # explicitly: they go
    pruned = _index(tmp_path / "idx", photo_dir, prune_missing=True)
    assert (pruned.removed, _count(tmp_path / "idx")) == (4, 0)


def test_a_drive_mounted_inside_a_root_keeps_its_rows(tmp_path: Path, photo_dir: Path) -> None:
    make_image(photo_dir / "nas" / "a.png", COLOURS["green"])
    make_image(photo_dir / "nas" / "b.png", COLOURS["blue"])
    _index(tmp_path / "idx", photo_dir / "nas")  # indexed on its own: a recorded root
    _index(tmp_path / "idx", photo_dir)  # (a mount point is recorded whenever it is indexed)
    assert _count(tmp_path / "idx") == 6
    _empty(photo_dir / "nas")
    summary = _index(tmp_path / "idx", photo_dir)
    assert (summary.removed, summary.offline_roots) == (0, [str(photo_dir / "nas")])


def test_a_deleted_photo_still_leaves_and_more_than_the_share_stays(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    (photo_dir / "yellow.bmp").unlink()
    assert _index(tmp_path / "idx", photo_dir).removed == 1  # a user deleting a photo
    (photo_dir / "red.jpg").unlink()
    (photo_dir / "sub" / "green.png").unlink()
    summary = _index(tmp_path / "idx", photo_dir)  # 2 of 3 missing: over the default share of 0.5
    assert (summary.removed, summary.kept_missing) == (0, 2)
    assert _count(tmp_path / "idx") == 3
    lenient = Indexer(tmp_path / "idx", model=fake_model(), workers=1, limits=Limits(max_missing_share=0.7))
    assert lenient.add_paths([photo_dir]).removed == 2


def test_check_repair_keeps_rows_of_a_renamed_root_unless_pruning(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    photo_dir.rename(tmp_path / "away")
    report = check_index(tmp_path / "idx", repair=True)
    assert len(report.missing_files) == 4 and not report.ok
    assert any("offline" in note for note in report.notes)
    assert _count(tmp_path / "idx") == 4
    pruned = check_index(tmp_path / "idx", repair=True, prune_missing=True)
    assert pruned.ok and _count(tmp_path / "idx") == 0


def test_the_cli_keeps_reports_and_removes_on_request(tmp_path: Path, photo_dir: Path) -> None:
    runner = CliRunner()
    index = tmp_path / "idx"
    _index(index, photo_dir)
    photo_dir.rename(tmp_path / "away")
    result = runner.invoke(app, ["check", "--index", str(index), "--repair"])
    assert result.exit_code == 1 and "kept" in result.output and _count(index) == 4
    result = runner.invoke(app, ["info", "--index", str(index), "--json"])
    facts = json.loads(result.output)
    assert facts["offline_roots"] == [str(photo_dir)] and facts["roots"] == [str(photo_dir)]
    result = runner.invoke(app, ["info", "--index", str(index)])
    assert f"offline_roots: {photo_dir}" in result.output
    result = runner.invoke(app, ["remove", "--index", str(index), str(photo_dir / "sub"), "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == {"removed": 2}
    result = runner.invoke(app, ["check", "--index", str(index), "--repair", "--prune-missing"])
    assert result.exit_code == 0, result.output
    assert _count(index) == 0
    facts = json.loads(runner.invoke(app, ["info", "--index", str(index), "--json"]).output)
    assert facts["offline_roots"] == []


def test_remove_drops_rows_of_files_that_exist_and_forgets_the_root(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    indexer = Indexer(tmp_path / "idx")
    assert indexer.remove_paths([photo_dir / "red.jpg"]) == 1
    assert indexer.remove_paths([photo_dir]) == 3
    store = IndexStore.open(tmp_path / "idx")
    try:
        assert store.metadata.count(ImageRow) == 0 and indexed_roots(store.metadata) == []
        assert len(store.vectors("image")) == 0
    finally:
        store.close()


def test_a_run_that_changes_nothing_keeps_the_generation(tmp_path: Path, photo_dir: Path) -> None:
    _index(tmp_path / "idx", photo_dir)
    store = IndexStore.open(tmp_path / "idx")
    try:
        before = store.metadata.generation("image")
        _index(tmp_path / "idx", photo_dir)
        assert store.metadata.generation("image") == before
    finally:
        store.close()


def _eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def test_the_watcher_keeps_an_emptied_root(tmp_path: Path, photo_dir: Path) -> None:
    index = tmp_path / "idx"
    runs: list[WatchRun] = []
    indexer = Indexer(index, model=fake_model(), workers=1)
    watcher = FolderWatcher(indexer, [photo_dir], debounce=0.2, max_delay=2.0, on_run=runs.append)
    assert watcher.start().new == 4  # type: ignore[union-attr]
    try:
        for path in sorted(photo_dir.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        _eventually(lambda: bool(runs) and not watcher.pending)
        time.sleep(1.0)  # any run for the last events too
    finally:
        watcher.stop()
    assert sum(r.summary.removed for r in runs) == 0
    assert _count(index) == 4


def test_a_new_subfolder_of_an_indexed_root_is_watched(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_image(photos / "2024" / "red.jpg", COLOURS["red"])  # the root itself holds no photo
    index = tmp_path / "idx"
    _index(index, photos)
    store = IndexStore.open(index)
    try:
        roots = indexed_roots(store.metadata)  # what `xmodal watch` (no PATH) watches
    finally:
        store.close()
    assert roots == [str(photos)]
    runs: list[WatchRun] = []
    watcher = FolderWatcher(Indexer(index, model=fake_model(), workers=1), roots, debounce=0.2, on_run=runs.append)
    watcher.start("skip")
    try:
        make_image(photos / "2025" / "blue.png", COLOURS["blue"])
        _eventually(lambda: _count(index) == 2)
    finally:
        watcher.stop()


@pytest.mark.parametrize("flag", ["--prune-missing"])
def test_prune_missing_needs_repair(tmp_path: Path, photo_dir: Path, flag: str) -> None:
    _index(tmp_path / "idx", photo_dir)
    result = CliRunner().invoke(app, ["check", "--index", str(tmp_path / "idx"), flag])
    assert result.exit_code == 2 and "--repair" in result.output


def test_post_api_index_over_an_emptied_folder_keeps_the_rows(tmp_path: Path) -> None:
    """POST /api/index {"paths": []} re-indexes every root; the library keeps an emptied root's rows."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tests.serving import build_library, make_app

    base = "http://127.0.0.1"  # the loopback Host header the DNS-rebinding guard admits

    library = build_library(tmp_path)
    before = _count(library.index)
    for path in sorted(library.photos.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    with TestClient(make_app(library, allow_index=True), base_url=base) as c:
        assert c.post("/api/index", json={"paths": []}).status_code == 202
        c.app.state.xmodal.jobs.wait(60)
        status = c.get("/api/index").json()
    assert status["state"] == "done" and status["summary"]["removed"] == 0, status
    assert status["summary"]["offline_roots"] == [str(library.photos)]
    assert _count(library.index) == before


def test_the_index_command_keeps_an_offline_root_and_prunes_on_request(tmp_path: Path, photo_dir: Path) -> None:
    runner = CliRunner()
    index = tmp_path / "idx"
    _index(index, photo_dir)
    _empty(photo_dir)
    result = runner.invoke(app, ["index", str(photo_dir), "--index", str(index), "--json"])
    summary = json.loads(result.stdout.splitlines()[0])
    assert (summary["removed"], summary["offline_roots"]) == (0, [str(photo_dir)])
    assert _count(index) == 4  # nothing to embed: the recorded model is never loaded
    result = runner.invoke(app, ["index", str(photo_dir), "--index", str(index), "--prune-missing"])
    assert "removed 4" in result.output and _count(index) == 0


@pytest.mark.slow
def test_the_watcher_catches_up_with_a_drive_mounted_again(tmp_path: Path, photo_dir: Path) -> None:
    index = tmp_path / "idx"
    _index(index, photo_dir)
    photo_dir.rename(tmp_path / "unmounted")
    runs: list[WatchRun] = []
    watcher = FolderWatcher(
        Indexer(index, model=fake_model(), workers=1), [photo_dir], debounce=0.2, offline_poll=0.3, on_run=runs.append
    )
    catch_up = watcher.start()
    try:
        assert catch_up is not None and catch_up.offline_roots == [str(photo_dir)] and catch_up.removed == 0
        assert watcher.offline == [str(photo_dir)]
        make_image(tmp_path / "unmounted" / "new" / "cyan.png", (30, 220, 220))
        (tmp_path / "unmounted").rename(photo_dir)  # mounted again, with a photo added elsewhere
        _eventually(lambda: _count(index) == 5)
        assert watcher.offline == []
        make_image(photo_dir / "later.png", (200, 30, 200))  # and listened to from now on
        _eventually(lambda: _count(index) == 6)
    finally:
        watcher.stop()

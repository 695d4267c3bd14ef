"""Schema migrations (Alembic): an index made by the previous release opens and upgrades by
itself, on SQLite and on PostgreSQL; a schema newer than the code is refused; every step reverses."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, inspect, text

from tests.backends import Backend
from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from tests.legacy_schema import LEGACY_COLUMNS, make_legacy_index
from xmodal.indexer import Indexer
from xmodal.indexer.errors import IndexLockedError
from xmodal.indexer.limits import Limits
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.migrations import HEAD, VERSION_TABLE, SchemaTooNewError, alembic_config, current_revision
from xmodal.indexer.store.schema import ImageRow, TextRow
from xmodal.search import SearchEngine


def _legacy(tmp_path: Path, backend: Backend) -> tuple[Path, Path, str]:
    photos = tmp_path / "photos"
    model = fake_model()
    vectors = {}
    for name, colour in COLOURS.items():
        path = make_image(photos / f"{name}.png", colour)
        vectors[str(path)] = model.embed_images([Image.open(path)])[0]
    index_dir = tmp_path / "idx"
    url = make_legacy_index(index_dir, backend.url, vectors, str(model.spec), model.dim)
    return index_dir, photos, url


def _columns(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return current_revision(connection)
    finally:
        engine.dispose()


def test_head_constant_matches_the_versions_folder() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_current_head() == HEAD
    revisions = [s.revision for s in script.walk_revisions()][::-1]
    assert revisions == ["0001", "0002", "0003", "0004", "0005", "0006", "0007"]


def test_previous_release_index_upgrades_by_itself(tmp_path: Path, db_backend: Backend) -> None:
    index_dir, photos, url = _legacy(tmp_path, db_backend)
    assert _revision(url) is None and "grid" in _columns(url, "images")
    assert _columns(url, "images") == LEGACY_COLUMNS["images"]

    store = IndexStore.open(index_dir)  # opening upgrades
    try:
        change = store.metadata.schema_change
        assert (change.before, change.after) == (None, HEAD)
        assert store.metadata.count(ImageRow) == 4 and store.metadata.count(TextRow) == 1
        assert len(store.metadata.failures()) == 1
        assert store.model_spec == str(fake_model().spec)
    finally:
        store.close()
    assert _revision(url) == HEAD
    columns = _columns(url, "images")
    assert "grid" not in columns and {"features", "generation"} <= columns
    assert '"schema": 2' in (index_dir / "xmodal.json").read_text()

    # the upgraded index searches, and indexing its folder again finds every photo unchanged
    with SearchEngine.open(index_dir, model=fake_model()) as engine:
        assert Path(engine.search_text("blue", k=1, rerank=False)[0].path).name == "blue.png"
    summary = Indexer(index_dir, model=fake_model()).add_paths([photos])
    assert (summary.new, summary.unchanged) == (0, 4)
    make_image(photos / "more" / "grey.png", (128, 128, 128))
    assert Indexer(index_dir, model=fake_model()).add_paths([photos]).new == 1

    again = IndexStore.open(index_dir)  # a second open: already at HEAD, nothing to do
    try:
        assert (again.metadata.schema_change.before, again.metadata.schema_change.after) == (HEAD, HEAD)
    finally:
        again.close()


def test_an_index_older_than_stored_features_gains_the_column(tmp_path: Path) -> None:
    index_dir, _, url = _legacy(tmp_path, Backend("sqlite", None))
    engine = create_engine(url)
    with engine.begin() as connection:  # as made before tower features were stored
        connection.execute(text("ALTER TABLE images DROP COLUMN features"))
    engine.dispose()
    IndexStore.open(index_dir).close()
    assert {"features", "generation"} <= _columns(url, "images")


def test_a_newer_schema_is_refused_not_downgraded(tmp_path: Path, db_backend: Backend) -> None:
    photos = tmp_path / "photos"
    make_image(photos / "red.png", COLOURS["red"])
    index_dir = tmp_path / "idx"
    Indexer(index_dir, model=fake_model()).add_paths([photos])
    store = IndexStore.open(index_dir)
    url = store.metadata.engine.url
    with store.metadata.engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0999'"))
    store.close()
    with pytest.raises(SchemaTooNewError, match=r"schema revision 0999, newer than this xmodal knows"):
        IndexStore.open(index_dir)
    assert _revision(url.render_as_string(hide_password=False)) == "0999"  # left as it was

    from typer.testing import CliRunner

    from xmodal.cli.app import app

    result = CliRunner().invoke(app, ["info", "--index", str(index_dir)])
    assert result.exit_code == 4
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "newer than this xmodal knows" in lines[0]
    if db_backend.is_postgres:
        assert url.password not in result.output


def test_every_revision_reverses(tmp_path: Path, db_backend: Backend) -> None:
    from alembic import command

    photos = tmp_path / "photos"
    make_image(photos / "red.png", COLOURS["red"])
    index_dir = tmp_path / "idx"
    Indexer(index_dir, model=fake_model()).add_paths([photos])
    store = IndexStore.open(index_dir)
    engine = store.metadata.engine
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0001")
        with engine.connect() as connection:
            assert current_revision(connection) == "0001"
            assert "grid" in {c["name"] for c in inspect(connection).get_columns("images")}
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
        with engine.connect() as connection:
            assert current_revision(connection) == HEAD
    finally:
        store.close()
    with SearchEngine.open(index_dir, model=fake_model()) as engine_:
        assert len(engine_.search_text("red", k=5, rerank=False)) == 1


def test_the_legacy_schema_is_the_previous_release_s() -> None:
    """tests/legacy_schema.py equals `git show 8427ffd:indexer/storage.py` (when history is here)."""
    import subprocess
    import sys
    import types

    from tests import legacy_schema

    root = Path(__file__).resolve().parents[1]
    shown = subprocess.run(["git", "show", "8427ffd:indexer/storage.py"], cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip("no git history here (an installed copy of the tests)")
    module = types.ModuleType("xmodal_release_8427ffd_storage")
    sys.modules[module.__name__] = module  # dataclass-style annotations resolve through sys.modules
    try:
        exec(compile(shown.stdout, "8427ffd:indexer/storage.py", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]

    def type_name(column) -> str:  # noqa: ANN001
        name = type(column.type).__name__
        return "String" if name == "FsPath" else name

    def shape(metadata) -> dict:  # noqa: ANN001
        return {
            t.name: (
                {(c.name, type_name(c), c.nullable, c.primary_key) for c in t.columns},
                {(tuple(c.name for c in i.columns), bool(i.unique)) for i in t.indexes},
            )
            for t in metadata.sorted_tables
        }

    assert shape(legacy_schema._Base.metadata) == shape(module.Base.metadata)


def test_processes_opening_an_old_index_at_once_upgrade_it_once(tmp_path: Path, db_backend: Backend) -> None:
    import threading

    index_dir, _, url = _legacy(tmp_path, db_backend)
    errors: list[BaseException] = []
    changes = []

    def open_it() -> None:
        try:
            store = IndexStore.open(index_dir)
            changes.append(store.metadata.schema_change.before)
            store.close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert _revision(url) == HEAD and "grid" not in _columns(url, "images")
    assert changes.count(None) >= 1 and set(changes) <= {None, HEAD}


def _held_by_a_reader(index_dir: Path, seconds: float):  # noqa: ANN202 - a started thread
    """Another process's connection reading the old (rollback-journal) database for `seconds`:
    its read lock keeps anyone from taking the database whole meanwhile (turning it into WAL)."""
    import sqlite3
    import threading

    db = sqlite3.connect(index_dir / "index.db", isolation_level=None, check_same_thread=False)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    db.execute("BEGIN")
    db.execute("SELECT count(*) FROM images").fetchone()

    def release() -> None:
        time.sleep(seconds)
        db.execute("COMMIT")
        db.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


@pytest.mark.slow
def test_an_old_index_another_process_is_reading_is_waited_for(tmp_path: Path) -> None:
    """Under load an opener that is upgrading holds the database for seconds: the others wait
    (SQLite's default wait was 5 s, set after the switch to WAL), they do not report it missing."""
    index_dir, _, url = _legacy(tmp_path, Backend("sqlite", None))
    reader = _held_by_a_reader(index_dir, 6.0)
    try:
        IndexStore.open(index_dir).close()
    finally:
        reader.join()
    assert _revision(url) == HEAD


@pytest.mark.slow
def test_a_database_held_too_long_is_busy_not_missing(tmp_path: Path) -> None:
    index_dir, _, _ = _legacy(tmp_path, Backend("sqlite", None))
    reader = _held_by_a_reader(index_dir, 2.0)
    try:
        with pytest.raises(IndexLockedError, match="busy"):
            IndexStore.open(index_dir, limits=Limits(database_busy_seconds=0.3))
    finally:
        reader.join()
    IndexStore.open(index_dir).close()  # once released it opens and upgrades


def test_sqlite_gives_back_the_pages_the_upgrade_freed(tmp_path: Path) -> None:
    import sqlite3

    photos = {}
    rng = np.random.default_rng(0)
    for i in range(120):  # files to stat; their 20 KB grids are what the upgrade drops
        path = tmp_path / "photos" / f"{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        v = rng.standard_normal(32).astype(np.float32)
        photos[str(path)] = v / np.linalg.norm(v)
    index_dir = tmp_path / "idx"
    make_legacy_index(index_dir, None, photos, str(fake_model().spec), 32, grid_values=10_000)

    def pages() -> tuple[int, int]:
        with sqlite3.connect(index_dir / "index.db") as db:
            return db.execute("PRAGMA page_count").fetchone()[0], db.execute("PRAGMA freelist_count").fetchone()[0]

    before, _ = pages()
    IndexStore.open(index_dir).close()
    after, free = pages()
    assert after < before / 4 and free < 64, (before, after, free)

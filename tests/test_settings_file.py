"""The index's settings file holds the database URL: with a password in it, the file is the
owner's alone from the moment it exists, not chmodded after being written readable (issue 24)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from xmodal.indexer.errors import IndexNotFoundError
from xmodal.indexer.store.index_store import IndexStore

_watched: dict[str, object] = {}


def _modes_before_chmod_or_replace(event: str, args: tuple) -> None:
    """Audit hook: the mode of a settings temp file just before it is chmodded or moved into place."""
    folder = _watched.get("folder")
    if folder is None or event not in ("os.chmod", "os.rename") or not args:
        return
    path = Path(str(args[0]))
    if path.parent == folder and path.suffix == ".tmp" and path.exists():
        _watched.setdefault("modes", []).append(stat.S_IMODE(path.stat().st_mode))  # type: ignore[union-attr]


sys.addaudithook(_modes_before_chmod_or_replace)  # hooks cannot be removed: it does nothing outside this test


def test_a_settings_file_with_a_password_is_never_readable_by_others(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    url = "postgresql://xmodal:s3cret-pw@127.0.0.1:9/nodb"  # nothing listens: the open fails after the write
    _watched.update(folder=index, modes=[])
    try:
        with pytest.raises(IndexNotFoundError):
            IndexStore.open(index, db_url=url, create=True)
    finally:
        _watched.pop("folder")
    settings = index / "xmodal.json"
    assert "s3cret-pw" in settings.read_text()
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600
    assert _watched["modes"] and set(_watched["modes"]) == {0o600}  # type: ignore[arg-type]
    assert not list(index.glob("*.tmp"))


def test_a_settings_file_without_a_password_stays_readable(tmp_path: Path) -> None:
    IndexStore.open(tmp_path / "index", create=True).close()
    assert stat.S_IMODE((tmp_path / "index" / "xmodal.json").stat().st_mode) == 0o644

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from tests.backends import db_backend, pg_server, pg_url  # noqa: F401 - fixtures: SQLite / PostgreSQL
from tests.ci_rules import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401 - hooks: CI skips fail
from tests.fakes import COLOURS, fake_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN202
    """Module- and session-scoped fixtures (built before any test's own folder exists) cache here,
    never in the user's cache (XMODAL_CACHE covers every xmodal cache: indexer.cache) or data folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XMODAL_CACHE", str(tmp_path_factory.mktemp("session-cache")))
        patch.setenv("XMODAL_INDEX", str(tmp_path_factory.mktemp("session-index") / "index"))
        yield


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own empty cache folder, so which path it takes (e.g. exported ONNX query
    encoders or the full model) never depends on earlier tests or runs."""
    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path_factory.mktemp("cache")))


def make_image(
    path: Path,
    colour: tuple[int, int, int],
    size: tuple[int, int] = (64, 48),
    fmt: str | None = None,
    **save_kwargs: object,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt, **save_kwargs)
    return path


@pytest.fixture
def fake():
    return fake_model()


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """Four flat-colour photos in nested folders."""
    root = tmp_path / "photos"
    make_image(root / "red.jpg", COLOURS["red"])
    make_image(root / "sub" / "green.png", COLOURS["green"])
    make_image(root / "sub" / "deeper" / "blue.webp", COLOURS["blue"])
    make_image(root / "yellow.bmp", COLOURS["yellow"])
    return root

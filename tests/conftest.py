from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from tests.fakes import COLOURS, fake_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def make_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), fmt: str | None = None, **save_kwargs: object) -> Path:
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

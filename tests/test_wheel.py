"""The built wheel, installed (not editable) in a fresh venv, runs the main job and finds its data.

The venv sees this environment's packages (--system-site-packages) so that torch is not installed
again, and the wheel goes in with --no-deps; the checks make sure `xmodal` itself comes from the
venv, never from the source tree or an editable install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "indexer", "search", "cli", "data")


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900)
    assert result.returncode == 0, f"{cmd}: {result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:  # a copy: building writes build/ and *.egg-info next to the sources
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(item, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", root / "dist", src, cwd=root)
    wheels = list((root / "dist").glob("xmodal-*.whl"))
    assert len(wheels) == 1
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--system-site-packages", venv, cwd=root)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheels[0], cwd=root)
    return venv


def test_the_wheel_holds_the_packages_and_the_data(wheel_venv: Path, tmp_path: Path) -> None:
    python = wheel_venv / "bin" / "python"
    probe = (
        "import json, xmodal.indexer, xmodal.search, xmodal.cli.app, xmodal.cli.mcp_command\n"
        "from xmodal.data import data_path\n"
        "print(json.dumps([xmodal.indexer.__file__, str(data_path('offline_head.pt')), data_path('offline_head.pt').is_file(),"
        " data_path('querybank_captions.txt').is_file()]))\n"
    )
    indexer_file, head, head_exists, bank_exists = json.loads(_run(python, "-c", probe, cwd=tmp_path).stdout)
    assert Path(indexer_file).is_relative_to(wheel_venv) and Path(head).is_relative_to(wheel_venv)
    assert head_exists and bank_exists


def test_the_installed_command_indexes_and_searches(wheel_venv: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, colour in (("red", (210, 20, 20)), ("blue", (20, 40, 210))):
        im = Image.new("RGB", (160, 120), (245, 245, 240))
        ImageDraw.Draw(im).ellipse((40, 20, 120, 100), fill=colour)
        im.save(photos / f"{name}.png")
    xmodal = wheel_venv / "bin" / "xmodal"
    env = {"XMODAL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    summary = json.loads(_run(xmodal, "index", photos, "--index", tmp_path / "idx", "--json", cwd=tmp_path, env=env).stdout)
    assert summary["new"] == 2 and summary["failed"] == 0
    hits = json.loads(_run(xmodal, "search", "a red circle", "--index", tmp_path / "idx", "--json", cwd=tmp_path, env=env).stdout)
    assert [Path(h["path"]).parent for h in hits] == [photos, photos] and hits[0]["score"] >= hits[1]["score"]
    assert sorted((tmp_path / "cache" / "query-encoders").glob("*.json"))  # prepared by the installed Indexer

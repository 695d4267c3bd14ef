"""The built wheel, installed (not editable) with its declared dependencies in a fresh venv: the core
install has no PyTorch, and runs the main job and finds its data.

The wheel is built as a user builds it (`pip wheel`, build isolation: setuptools from pyproject's
build-system). The venv is a plain one that sees nothing of the test environment; pip resolves the
wheel's dependencies from the configured registry (here the machine's package mirror: 466 MB for the
core, README "Install"). The checks make sure `xmodal` itself comes from the venv,
never from the source tree or an editable install, and that torch cannot be imported there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "indexer", "search", "cli", "data")
BIN = "Scripts" if os.name == "nt" else "bin"


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900
    )
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:  # a copy: building writes build/ and *.egg-info next to the sources
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(item, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "dist", src, cwd=root)
    wheels = list((root / "dist").glob("xmodal-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_venv(wheel_file: Path) -> Path:
    env_dir = wheel_file.parents[1] / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)  # plain: sees neither this environment nor the base's packages
    python = env_dir / BIN / "python"
    # The wheel and its declared dependencies (not the extras), resolved by pip as a user's install is.
    _run(python, "-m", "pip", "install", "-q", wheel_file, cwd=env_dir)
    return env_dir


def test_the_wheel_holds_the_packages_and_the_data_but_no_maintainer_scripts(wheel_file: Path) -> None:
    names = zipfile.ZipFile(wheel_file).namelist()
    assert {n.split("/")[0] for n in names} == {"xmodal", "xmodal-0.1.0.dist-info"}
    assert "xmodal/search/training/head.py" in names  # `xmodal train` runs it
    assert not [n for n in names if "offline_head.py" in n or "offline_fusion.py" in n]  # training/, not installed


def test_the_installed_wheel_imports_from_the_venv_with_its_data(wheel_venv: Path, tmp_path: Path) -> None:
    python = wheel_venv / BIN / "python"
    probe = (
        "HEAVY = ('torch', 'torchvision', 'timm', 'open_clip', 'transformers', 'tokenizers', 'huggingface_hub')\n"
        "import json, importlib.util, xmodal.indexer, xmodal.search, xmodal.cli.app, xmodal.cli.mcp_command\n"
        "from xmodal.data import data_path\n"
        "head = data_path('offline_head.pt')\n"
        "print(json.dumps([xmodal.indexer.__file__, str(head), head.is_file(),"
        " data_path('querybank_captions.txt').is_file(), data_path('xmodal-lite/text.onnx').is_file(),"
        " [m for m in HEAVY if importlib.util.find_spec(m)]]))\n"
    )
    indexer_file, head, head_exists, bank_exists, onnx_exists, heavy = json.loads(
        _run(python, "-c", probe, cwd=tmp_path).stdout
    )
    assert Path(indexer_file).is_relative_to(wheel_venv) and Path(head).is_relative_to(wheel_venv)
    assert head_exists and bank_exists and onnx_exists
    assert heavy == []  # the core install: no PyTorch, no model libraries
    done = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr


def test_the_installed_command_indexes_and_searches(wheel_venv: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, colour in (("red", (210, 20, 20)), ("blue", (20, 40, 210))):
        im = Image.new("RGB", (160, 120), (245, 245, 240))
        ImageDraw.Draw(im).ellipse((40, 20, 120, 100), fill=colour)
        im.save(photos / f"{name}.png")
    xmodal = wheel_venv / BIN / "xmodal"
    env = {"XMODAL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    index = tmp_path / "idx"
    summary = json.loads(_run(xmodal, "index", photos, "--index", index, "--json", cwd=tmp_path, env=env).stdout)
    assert summary["new"] == 2 and summary["failed"] == 0
    hits = json.loads(_run(xmodal, "search", "a red circle", "--index", index, "--json", cwd=tmp_path, env=env).stdout)
    assert [Path(h["path"]).parent for h in hits] == [photos, photos] and hits[0]["score"] >= hits[1]["score"]
    assert sorted((tmp_path / "cache" / "querybanks").glob("*.npy"))  # prepared by the installed Indexer
    assert not (tmp_path / "cache" / "query-encoders").exists()  # the shipped ONNX files: nothing exported


def test_the_core_install_stays_within_its_size_budget(wheel_venv: Path) -> None:
    """The whole venv (pip and setuptools included, as `python3 -m venv` makes it) as `du -s` counts
    it: at most 500 MiB (the issue's goal; 466 MiB on 2026-12-07)."""
    used = 0
    for folder, _, files in os.walk(wheel_venv):
        for path in (folder, *(os.path.join(folder, name) for name in files)):
            used += os.lstat(path).st_blocks * 512
    assert used <= 500 * 2**20, f"the core venv holds {used / 2**20:.0f} MiB"

"""The built wheel, installed (not editable) in a fresh venv, runs the main job and finds its data.

The wheel is built as a user builds it (`pip wheel`, build isolation: setuptools from pyproject's
build-system). The venv is a plain one that sees the *test environment's* packages through a .pth
file, wherever that environment is: a venv (as most users and CI work), a conda env or the system
interpreter. (`venv --system-site-packages` would see the base interpreter instead, which inside a
venv lacks torch.) Installing the dependencies afresh from the registry measured 2 min 10 s and
6.3 GB here (torch with its CUDA wheels), so the wheel's declared dependencies are checked against
that environment instead (without downloads). The checks make sure `xmodal` itself comes from the
venv, never from the source tree or an editable install.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "indexer", "search", "cli", "data")
BIN = "Scripts" if os.name == "nt" else "bin"


DEPENDENCY_PROBE = """
from importlib.metadata import PackageNotFoundError, requires, version
from packaging.requirements import Requirement

unmet = []
for requirement in map(Requirement, requires("xmodal")):
    if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
        try:
            found = version(requirement.name)
        except PackageNotFoundError:
            found = None
        if found is None or not requirement.specifier.contains(found, prereleases=True):
            unmet.append(f"{requirement} (found {found})")
assert not unmet, unmet
"""


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900
    )
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def _test_environment_site_dirs() -> list[str]:
    """Where this interpreter's packages live (its venv's, and the base's when the venv includes those)."""
    dirs = [*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


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
    site_dir = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=env_dir).stdout.strip()
    (Path(site_dir) / "test-environment.pth").write_text("\n".join(_test_environment_site_dirs()) + "\n")
    # The wheel into the venv; the editable xmodal of the test environment is visible, hence --ignore-installed.
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel_file, cwd=env_dir)
    # Its declared dependencies (not the extras) are met by what the venv sees: one missing from pyproject or
    # out of its range fails here.
    _run(python, "-c", DEPENDENCY_PROBE, cwd=env_dir)
    return env_dir


def test_the_wheel_holds_the_packages_and_the_data_but_no_maintainer_scripts(wheel_file: Path) -> None:
    names = zipfile.ZipFile(wheel_file).namelist()
    assert {n.split("/")[0] for n in names} == {"xmodal", "xmodal-0.1.0.dist-info"}
    assert "xmodal/search/training/head.py" in names  # `xmodal train` runs it
    assert not [n for n in names if "offline_head.py" in n or "offline_fusion.py" in n]  # training/, not installed


def test_the_installed_wheel_imports_from_the_venv_with_its_data(wheel_venv: Path, tmp_path: Path) -> None:
    python = wheel_venv / BIN / "python"
    probe = (
        "import json, torch, xmodal.indexer, xmodal.search, xmodal.cli.app, xmodal.cli.mcp_command\n"
        "from xmodal.data import data_path\n"
        "head = data_path('offline_head.pt')\n"
        "print(json.dumps([xmodal.indexer.__file__, str(head), head.is_file(),"
        " data_path('querybank_captions.txt').is_file(), torch.__file__]))\n"
    )
    indexer_file, head, head_exists, bank_exists, torch_file = json.loads(
        _run(python, "-c", probe, cwd=tmp_path).stdout
    )
    assert Path(indexer_file).is_relative_to(wheel_venv) and Path(head).is_relative_to(wheel_venv)
    assert head_exists and bank_exists
    import torch  # the venv's dependencies are this environment's (not the base interpreter's)

    assert Path(torch_file).resolve() == Path(torch.__file__).resolve()


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
    assert sorted((tmp_path / "cache" / "query-encoders").glob("*.json"))  # prepared by the installed Indexer

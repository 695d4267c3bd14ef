"""Bug 3: loading models changes no process-wide state (environment, hub settings, log levels)."""

from __future__ import annotations

import logging
import os

import pytest

from xmodal.indexer.errors import ModelLoadError


@pytest.fixture
def level_changes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the loggers whose level is set while the test runs ("root" for the root logger)."""
    changed: list[str] = []
    real = logging.Logger.setLevel

    def recording(self: logging.Logger, level: int | str) -> None:
        changed.append(self.name)
        real(self, level)

    monkeypatch.setattr(logging.Logger, "setLevel", recording)
    return changed


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

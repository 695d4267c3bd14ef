"""Model specs and the open_clip path: local checkpoints load, hub failures are one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.indexer.errors import ModelLoadError
from xmodal.indexer.models import embedding as models_module
from xmodal.indexer.models.embedding import load_model
from xmodal.indexer.models.spec import OFFLINE_DEFAULT, parse_model_spec

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


def test_spec_parsing(tmp_path: Path) -> None:
    assert str(parse_model_spec(None)) == OFFLINE_DEFAULT
    spec = parse_model_spec("ViT-B-32:laion2b_s34b_b79k")
    assert (spec.name, spec.pretrained, spec.checkpoint) == ("ViT-B-32", "laion2b_s34b_b79k", None)
    local = parse_model_spec(f"ViT-B-32:{tmp_path}/w.pt+{tmp_path}/head.pt")
    assert local.checkpoint == tmp_path / "w.pt" and local.head == tmp_path / "head.pt"
    assert parse_model_spec(f"xmodal-lite+{tmp_path}/h.pt").capabilities.towers == "offline"
    with pytest.raises(ModelLoadError, match="NAME:PRETRAINED"):
        parse_model_spec("just-a-name")


@pytest.mark.parametrize(
    "spec,message",
    [
        ("ViT-Q-99:openai", "unknown model 'ViT-Q-99'"),
        ("ViT-B-32:no_such_tag", "has no pretrained weights 'no_such_tag'"),
        ("ViT-B-32:/does/not/exist.pt", "not found"),
    ],
)
def test_bad_specs_fail_before_any_download(spec: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model(spec)


def test_hub_unreachable_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models_module, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelLoadError, match=r"RN50:openai.*cannot be reached.*xmodal-lite"):
        load_model("RN50:openai")


def _tiny_checkpoint(tmp_path: Path, name: str) -> Path:
    """A tiny open_clip architecture registered under `name`, with seeded random weights saved."""
    import open_clip

    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / f"{name}.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(config_dir)
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    torch.save(open_clip.create_model(name).state_dict(), weights)
    return weights


def test_local_checkpoint_of_an_open_clip_architecture(tmp_path: Path) -> None:
    weights = _tiny_checkpoint(tmp_path, "xmodal-tiny-test")
    model = load_model(f"xmodal-tiny-test:{weights}", device="cpu")
    texts = model.embed_texts(["a dog", "a cat"])
    images = model.embed_images([Image.new("RGB", (50, 40), (200, 10, 10))])
    assert texts.shape == (2, 32) and images.shape == (1, 32) and texts.dtype == np.float32
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_half_precision_matches_cpu(tmp_path: Path) -> None:
    weights = _tiny_checkpoint(tmp_path, "xmodal-tiny-gpu")
    cpu = load_model(f"xmodal-tiny-gpu:{weights}", device="cpu").embed_texts(["a dog"])
    gpu = load_model(f"xmodal-tiny-gpu:{weights}", device="cuda").embed_texts(["a dog"])
    assert float(cpu[0] @ gpu[0]) > 0.99  # fp16 on the GPU, same direction as fp32 on the CPU

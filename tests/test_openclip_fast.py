"""OpenCLIP models get the fast paths: ONNX query encoders, an onnxruntime image path for
indexing, progress for every one-time preparation. A small open_clip architecture with a local
random-weights checkpoint (no download) stands in for a pretrained one: same code, less compute."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow

ARCH = "ViT-S-32-alt"  # 43 M parameters: the smallest open_clip config with a CLIP tokenizer


@pytest.fixture(scope="module")
def clip_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(ARCH)
    path = tmp_path_factory.mktemp("clip") / "random.pt"
    torch.save(model.state_dict(), path)
    return f"{ARCH}:{path}"


def _drawing(colour: tuple[int, int, int], shape: str, size: tuple[int, int] = (200, 150)) -> Image.Image:
    im = Image.new("RGB", size, (245, 245, 240))
    draw = ImageDraw.Draw(im)
    box = (size[0] // 4, size[1] // 6, 3 * size[0] // 4, 5 * size[1] // 6)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
    return im


@pytest.fixture(scope="module")
def indexed(clip_spec: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, list]:
    """An index built through the library alone (no CLI), with its own cache folder."""
    from xmodal.indexer import Indexer

    root = tmp_path_factory.mktemp("openclip")
    cache = root / "cache"
    saved = os.environ.get("XMODAL_CACHE")
    os.environ["XMODAL_CACHE"] = str(cache)
    try:
        photos = root / "photos"
        photos.mkdir()
        for i, (colour, shape) in enumerate(
            [((200, 0, 0), "circle"), ((0, 0, 200), "square"), ((0, 150, 0), "circle"), ((90, 90, 90), "square")]
        ):
            _drawing(colour, shape, (200 + 40 * i, 150)).save(photos / f"p{i}.png")
        events: list = []
        summary = Indexer(root / "idx", model=clip_spec, on_progress=events.append).add_paths([photos])
        assert summary.new == 4
    finally:
        if saved is None:
            os.environ.pop("XMODAL_CACHE", None)
        else:
            os.environ["XMODAL_CACHE"] = saved
    return root / "idx", photos, cache, events


def test_clip_tokenizer_without_torch_gives_open_clips_ids() -> None:
    import open_clip

    from xmodal.indexer.models.clip_tokenizer import ClipBpeTokenizer

    reference = open_clip.get_tokenizer(ARCH)
    ours = ClipBpeTokenizer(Path(open_clip.tokenizer.default_bpe()), reference.context_length)
    texts = [
        "a dog on the grass",
        "  Two CATS!!  on a sofa's edge ",
        "naïve café — 日本語 😀",
        "it's &amp; I'd",
        "",
        "word " * 100,
    ]
    assert np.array_equal(ours(texts), reference(texts).numpy())


def test_library_index_prepares_exports_and_bank_with_progress(clip_spec: str, indexed: tuple) -> None:
    """Bug 6: the library's Indexer itself makes what a fast search needs, and says so."""
    from xmodal.indexer.preparation import BANK_STAGE

    _, _, cache, events = indexed
    stages = {e.stage for e in events}
    assert {"index", "exporting the image encoder", "exporting the text query encoder", BANK_STAGE} <= stages
    bank = [e for e in events if e.stage == BANK_STAGE]
    assert bank[0].done == 0 and bank[-1].done == bank[-1].total > 1000 and len(bank) > 10  # steps, not one jump
    sidecars = sorted((cache / "query-encoders").glob("*.json"))
    kinds = sorted(json.loads(p.read_text())["kind"] for p in sidecars)
    assert kinds == ["image", "text"]


def test_exported_encoders_equal_the_torch_model(
    clip_spec: str, indexed: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xmodal.indexer import load_model
    from xmodal.indexer.models.query_encoders import QueryImageEncoder, QueryTextEncoder

    _, photos, cache, _ = indexed
    monkeypatch.setenv("XMODAL_CACHE", str(cache))
    model = load_model(clip_spec)
    text = QueryTextEncoder.for_index(clip_spec)
    image = QueryImageEncoder.for_index(clip_spec)
    assert text is not None and image is not None and "CPUExecutionProvider" in text.providers
    texts = ["a red circle", "x", "two children playing " * 30]
    assert np.allclose(text.embed_texts(texts), model.embed_texts(texts), atol=1e-5)
    images = [Image.open(p) for p in sorted(photos.iterdir())] + [
        _drawing((10, 200, 200), "circle", (90, 300)).convert("L")
    ]
    want = model.embed_images(images)  # the torch towers themselves: an indexing run leaves the model as it is
    assert not model.uses_exported_image_path
    assert np.allclose(image.embed_images(images), want, atol=1e-5)


def test_the_image_export_fuses_attention_and_ends_with_the_class_token_alone(
    clip_spec: str, indexed: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    from xmodal.indexer.models.query_encoders import sidecar_path

    _, _, cache, _ = indexed
    monkeypatch.setenv("XMODAL_CACHE", str(cache))
    sidecar = sidecar_path(clip_spec, "image")
    graph = onnx.load(str(sidecar.parent / json.loads(sidecar.read_text())["onnx"]), load_external_data=False).graph
    ops = [node.op_type for node in graph.node]
    import open_clip

    layers = open_clip.get_model_config(ARCH)["vision_cfg"]["layers"]
    # the last block runs for the class token alone, through the plain attention (one Softmax);
    # the vectors equal torch's (the test above)
    assert ops.count("Attention") == layers - 1 and ops.count("Softmax") == 1


def test_fused_attention_leaves_masked_and_cross_attention_to_pytorch() -> None:
    import torch

    from xmodal.indexer.models.vit_export import fuse_self_attention

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, batch_first=True).eval()  # its fast path reads self_attn
    plain = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    holder = torch.nn.ModuleDict({"plain": plain, "layer": layer, "sequence_first": torch.nn.MultiheadAttention(32, 4)})
    x, other = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    mask = torch.triu(torch.full((5, 5), float("-inf")), 1)
    with torch.no_grad():
        want = [
            plain(x, x, x, need_weights=False)[0],
            plain(x, other, other, need_weights=False)[0],
            plain(x, x, x, need_weights=False, attn_mask=mask)[0],
        ]
        assert fuse_self_attention(holder) == 1  # not the sequence-first one, nor PyTorch's own layer's
        got = [
            holder["plain"](x, x, x, need_weights=False)[0],
            holder["plain"](x, other, other, need_weights=False)[0],
            holder["plain"](x, x, x, need_weights=False, attn_mask=mask)[0],
        ]
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-6)


def test_an_export_without_fused_operators_names_no_extra_domain(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The exporter warns on stderr (from C++, past Python's warnings) about a custom domain the
    graph does not use: `xmodal index` of the offline default printed it twice."""
    import onnx
    import torch

    from xmodal.indexer.models.query_encoders import _export

    plain = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    _export(plain, torch.zeros(2, 8), tmp_path / "plain.onnx", "x", {0: "batch"})
    assert "opset domain" not in capfd.readouterr().err
    assert all(o.domain in ("", "ai.onnx") for o in onnx.load(str(tmp_path / "plain.onnx")).opset_import)


def test_index_vectors_from_onnxruntime_equal_torchs(
    clip_spec: str, indexed: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xmodal.indexer import load_model
    from xmodal.search import SearchEngine

    index, photos, cache, _ = indexed
    monkeypatch.setenv("XMODAL_CACHE", str(cache))
    model = load_model(clip_spec)
    with SearchEngine.open(index) as engine:
        hits = engine.search_image(photos / "p2.png", k=4, rerank=False)
        ids = [h.id for h in hits]
        stored = engine.vectors(ids)
    want = model.embed_images([Image.open(h.path) for h in hits])  # the torch towers
    assert hits[0].path.endswith("p2.png")
    assert np.allclose(stored, want, atol=1e-4)


def _vectors_by_path(index: Path) -> dict[str, np.ndarray]:
    from sqlalchemy import select

    from xmodal.indexer.store.index_store import IndexStore
    from xmodal.indexer.store.schema import ImageRow

    store = IndexStore.open(index)
    try:
        with store.metadata.session() as s:
            return {p: np.frombuffer(v, "<f4") for p, v in s.execute(select(ImageRow.path, ImageRow.vector))}
    finally:
        store.close()


def test_a_later_run_embeds_through_the_export_without_loading_the_torch_model(
    clip_spec: str, indexed: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a ViT's weights costs seconds; with the image path exported, a run needs none of it."""
    from xmodal.indexer import Indexer
    from xmodal.indexer.models.deferred import DeferredTowers

    index, photos, cache, _ = indexed
    monkeypatch.setenv("XMODAL_CACHE", str(cache))
    indexer = Indexer(tmp_path / "again", model=clip_spec)
    assert indexer.add_paths([photos]).new == 4
    assert indexer.model is not None and isinstance(indexer.model.towers, DeferredTowers)
    assert not indexer.model.towers.is_loaded
    want, got = _vectors_by_path(index), _vectors_by_path(tmp_path / "again")
    assert sorted(got) == sorted(want)
    assert all(np.allclose(got[p], want[p], atol=1e-5) for p in want)
    texts = indexer.model.embed_texts(["a red circle"])  # the exported text path: still no torch model
    assert not indexer.model.towers.is_loaded and texts.shape == (1, indexer.model.dim)
    assert indexer.model.logit_scale > 0  # anything beyond the exported paths loads the model
    assert indexer.model.towers.is_loaded


def _in_fresh_process(script: str, cache: Path) -> list:
    """Run `script` in a new interpreter with this cache; what it printed last, as JSON."""
    env = {**os.environ, "XMODAL_CACHE": str(cache)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cold_search_runs_without_torch(indexed: tuple) -> None:
    """A fresh process searches an OpenCLIP index with the exports alone: torch is never imported."""
    index, photos, cache, _ = indexed
    script = (
        "import sys, json\n"
        "from xmodal.search import SearchEngine\n"
        f"engine = SearchEngine.open({str(index)!r})\n"
        "text = engine.search_text('a red circle', k=3)\n"
        f"image = engine.search_image({str(photos / 'p1.png')!r}, k=1)\n"
        "print(json.dumps([len(text), image[0].path, 'torch' in sys.modules]))\n"
    )
    count, path, torch_loaded = _in_fresh_process(script, cache)
    assert count == 3 and path.endswith("p1.png") and torch_loaded is False


def test_a_later_run_from_a_fresh_process_never_imports_torch(clip_spec: str, indexed: tuple, tmp_path: Path) -> None:
    """With the image path exported, an indexing run is onnxruntime, Pillow and NumPy: importing
    torch and torchvision would cost more than embedding a few new photos."""
    index, photos, cache, _ = indexed
    script = (
        "import sys, json\n"
        "from xmodal.indexer import Indexer\n"
        f"summary = Indexer({str(tmp_path / 'fresh')!r}, model={clip_spec!r}).add_paths([{str(photos)!r}])\n"
        "print(json.dumps([summary.new, 'torch' in sys.modules, 'torchvision' in sys.modules]))\n"
    )
    assert _in_fresh_process(script, cache) == [4, False, False]
    want, got = _vectors_by_path(index), _vectors_by_path(tmp_path / "fresh")
    assert sorted(got) == sorted(want) and all(np.allclose(got[p], want[p], atol=1e-5) for p in want)

"""The offline default's shipped ONNX files (data/xmodal-lite/, training/export_offline_onnx.py) give
the PyTorch model's vectors, within the rounding of the text tower's float16 weights (the image
tower keeps float32, the head its int8).

Stated tolerance (README, "Install"): per vector a cosine of at least MIN_COSINE to the PyTorch
model's and no coordinate off by more than MAX_ABS (vectors are unit rows of 384 numbers); tower
features (stored per photo for the fusion) within MAX_FEATURE_REL of their scale.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal.data import data_path
from xmodal.indexer.models.query_encoders import QueryImageEncoder, QueryTextEncoder, sidecar_path
from xmodal.indexer.models.spec import model_fingerprint, parse_model_spec

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flickr8k-1k"
if not FLICKR.is_dir():
    FLICKR = Path("/work/shared/datasets/flickr8k-1k")
MIN_COSINE = 0.9999
MAX_ABS = 0.002
MAX_FEATURE_REL = 0.01
PHOTOS = 200
CAPTIONS = 400


def test_the_default_model_finds_its_shipped_files_without_an_export(tmp_path: Path) -> None:
    for kind in ("text", "image"):
        sidecar = sidecar_path("xmodal-lite", kind)
        assert sidecar.parent == data_path("xmodal-lite")
        description = json.loads(sidecar.read_text())
        assert description["weights"] == ("float16" if kind == "text" else "float32")
        assert (sidecar.parent / description["onnx"]).is_file()
    assert QueryTextEncoder.for_index("xmodal-lite") is not None
    assert QueryImageEncoder.for_index("xmodal-lite") is not None
    # a user's head changes the vectors: its model is exported from torch, never answered by the shipped files
    head = tmp_path / "head.pt"
    assert sidecar_path(f"xmodal-lite+{head}", "text").parent != data_path("xmodal-lite")
    assert sidecar_path("xmodal-lite-duo", "image").parent != data_path("xmodal-lite")


def test_indexes_made_before_the_shipped_files_stay_valid() -> None:
    """The shipped files hold the same model (vectors equal within the tolerance below), so its
    fingerprint, which every index records, is the one indexes built with the PyTorch path have."""
    assert model_fingerprint(parse_model_spec("xmodal-lite")) == "77318678f0aa05d2"


def _test_split() -> tuple[list[Path], list[str]]:
    with open(FLICKR / "split.csv", newline="") as f:
        test = sorted(r["image"] for r in csv.DictReader(f) if r["split"] == "test")[:PHOTOS]
    with open(FLICKR / "captions.txt", newline="") as f:
        captions = [r["caption"] for r in csv.DictReader(f) if r["image"] in set(test)][:CAPTIONS]
    return [FLICKR / "images" / name for name in test], captions


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
@pytest.mark.skipif(not FLICKR.is_dir(), reason="needs the flickr8k-1k photos")
def test_shipped_files_give_the_pytorch_vectors() -> None:
    pytest.importorskip("torch", reason="the PyTorch path needs the train extra")
    from xmodal.indexer import load_model

    model = load_model("xmodal-lite", "cpu")
    photos, captions = _test_split()
    images = [Image.open(p).convert("RGB") for p in photos]
    text = QueryTextEncoder(sidecar_path("xmodal-lite", "text"))
    image = QueryImageEncoder(sidecar_path("xmodal-lite", "image"))

    want_texts, got_texts = model.embed_texts(captions), text.embed_texts(captions)
    assert float(np.abs(got_texts - want_texts).max()) <= MAX_ABS
    assert float(_cosines(got_texts, want_texts).min()) >= MIN_COSINE

    pixels = np.stack([model.image_transform(im).numpy() for im in images])
    want = model.embed_pixels_for_index(pixels)
    got = image.embed_pixels_for_index(pixels)
    assert float(np.abs(got.vectors - want.vectors).max()) <= MAX_ABS
    assert float(_cosines(got.vectors, want.vectors).min()) >= MIN_COSINE
    assert got.tower_features is not None and want.tower_features is not None
    scale = np.abs(want.tower_features.astype(np.float32)).max()
    assert float(np.abs(got.tower_features.astype(np.float32) - want.tower_features).max()) <= MAX_FEATURE_REL * scale
    # the shipped path's own preprocessing (Pillow and NumPy) gives the same pixels as torchvision's
    assert float(_cosines(image.embed_images(images[:20]), want.vectors[:20]).min()) >= MIN_COSINE


@pytest.mark.gpu
def test_the_shipped_files_run_on_onnxruntimes_cuda_provider() -> None:
    """The gpu extra's onnxruntime-gpu: the default model's shipped files run on the CUDA provider,
    chosen by "auto", with the CPU's vectors."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (the gpu extra) and a CUDA GPU")
    from xmodal.indexer.models.deferred import load_shipped

    sidecar = sidecar_path("xmodal-lite", "image")
    gpu, cpu = QueryImageEncoder(sidecar, device="auto"), QueryImageEncoder(sidecar, device="cpu")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    pixels = np.random.default_rng(0).uniform(-1, 1, (4, 3, 224, 224)).astype(np.float32)
    assert float(_cosines(gpu.embed_pixels(pixels), cpu.embed_pixels(pixels)).min()) >= 0.999
    model = load_shipped(parse_model_spec("xmodal-lite"), "cuda")
    assert model is not None and model.embed_texts(["a dog"]).shape == (1, 384)


def test_the_first_run_reads_the_shipped_query_bank(tmp_path: Path) -> None:
    """The 2,000-caption bank QB-Norm needs ships with the model: a new machine's first run does not
    spend tens of seconds embedding it."""
    from xmodal.indexer import Indexer
    from xmodal.indexer.preparation import BANK_STAGE

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(photos / "red.png")
    stages: list[str] = []
    Indexer(tmp_path / "idx", on_progress=lambda p: stages.append(p.stage)).add_paths([photos])
    assert BANK_STAGE not in stages and stages
    shipped = np.load(data_path("xmodal-lite") / "querybank.npy")
    cached = list((Path(os.environ["XMODAL_CACHE"]) / "querybanks").glob("*.npy"))
    assert len(cached) == 1 and np.array_equal(np.load(cached[0]), shipped)


@pytest.mark.slow
def test_the_shipped_query_bank_is_the_shipped_text_graphs() -> None:
    from xmodal.search.rerank.qbnorm import BANK_LIMIT

    lines = data_path("querybank_captions.txt").read_text(encoding="utf-8").splitlines()
    captions = [line.strip() for line in lines if line.strip()][:BANK_LIMIT]
    shipped = np.load(data_path("xmodal-lite") / "querybank.npy")
    assert shipped.shape == (len(captions), 384)
    got = QueryTextEncoder(sidecar_path("xmodal-lite", "text")).embed_texts(captions)
    assert float(np.abs(got - shipped).max()) <= 1e-5

"""Accelerated paths equal the CPU path within tolerance. Each test skips only where its hardware
is absent (no CUDA GPU, no Apple MPS, no GPU FAISS, no CUDA provider in onnxruntime);
benchmarks/gpu_check.sh runs them on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu

CUDA = torch.cuda.is_available()
MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _images() -> list[Image.Image]:
    out = []
    for colour in ((200, 30, 30), (30, 30, 200), (40, 160, 40)):
        im = Image.new("RGB", (240, 180), (240, 240, 235))
        ImageDraw.Draw(im).ellipse((60, 30, 180, 150), fill=colour)
        out.append(im)
    return out


def _same_space(device: str) -> None:
    """Cosine between each GPU vector and its CPU twin (fp16 on CUDA, so not bit-equal)."""
    from xmodal.indexer import load_model

    cpu, accelerated = load_model(device="cpu"), load_model(device=device)  # type: ignore[arg-type]
    assert accelerated.device == device
    texts = ["a dog on the grass", "a red car", "two children playing"]
    for embed in ("embed_texts", "embed_images"):
        items = texts if embed == "embed_texts" else _images()
        want, got = getattr(cpu, embed)(items), getattr(accelerated, embed)(items)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.all(np.sum(want * got, axis=1) > 0.995), embed


@pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
def test_model_on_cuda_equals_cpu() -> None:
    _same_space("cuda")


@pytest.mark.skipif(not MPS, reason="no Apple MPS device")
def test_model_on_mps_equals_cpu() -> None:
    _same_space("mps")


def _faiss_gpu() -> bool:
    from xmodal.indexer.store.vector_index import gpu_available

    return gpu_available()


@pytest.mark.skipif(not CUDA or not _faiss_gpu(), reason="no GPU FAISS (faiss-cpu installed or no CUDA GPU)")
def test_faiss_on_the_gpu_finds_what_the_cpu_finds() -> None:
    import faiss

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20000, 256), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:50] + 0.01
    cpu = faiss.IndexFlatIP(256)
    cpu.add(vectors)
    gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
    want_scores, want = cpu.search(queries, 10)
    got_scores, got = gpu.search(queries, 10)
    assert np.mean(want == got) > 0.99 and np.allclose(want_scores, got_scores, atol=1e-4)


def _ort_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(
    not CUDA or not _ort_cuda(), reason="no CUDA GPU or onnxruntime without the CUDA provider (onnxruntime-gpu)"
)
def test_query_encoders_on_cudas_provider_equal_cpu(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from xmodal.indexer import load_model
    from xmodal.indexer.models.query_encoders import QueryImageEncoder, QueryTextEncoder, prepare_query_encoders

    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path))
    model = load_model(device="cpu")
    prepare_query_encoders(model)
    for kind in (QueryTextEncoder, QueryImageEncoder):
        gpu, cpu = kind.for_index("xmodal-lite", device="auto"), kind.for_index("xmodal-lite", device="cpu")
        assert gpu is not None and cpu is not None and gpu.providers[0] == "CUDAExecutionProvider"
        if kind is QueryTextEncoder:
            want, got = cpu.embed_texts(["a dog", "a red car"]), gpu.embed_texts(["a dog", "a red car"])  # type: ignore[union-attr]
        else:
            want, got = cpu.embed_images(_images()), gpu.embed_images(_images())  # type: ignore[union-attr]
        assert np.allclose(want, got, atol=1e-3)

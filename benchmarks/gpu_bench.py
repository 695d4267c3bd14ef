"""GPU against CPU in one table: indexing throughput (decode vs model) and 1M-vector FAISS search.

Run by benchmarks/gpu_check.sh (which also runs the GPU tests); alone:

    python benchmarks/gpu_bench.py [--photos 512] [--vectors 1000000] [--model xmodal-lite]

Without a CUDA GPU it says so and measures the CPU half only. Photos are synthetic 2-MP JPEGs
(noise over gradients, so decoding costs what a real photo's does); vectors are random unit rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS: dict[str, list[str]] = {}  # measure -> [cpu, gpu]


def hardware() -> dict[str, object]:
    import faiss
    import onnxruntime
    import torch

    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "cuda": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "faiss_gpu": hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0,
        "onnxruntime": onnxruntime.get_available_providers(),
    }


def make_photos(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, 1600, dtype=np.float32)
    paths = []
    for i in range(count):
        noise = rng.normal(0, 25, (1200, 1600, 3)).astype(np.float32)
        base = np.stack(
            [ramp[None, :].repeat(1200, 0), ramp[::-1][None, :].repeat(1200, 0), np.full((1200, 1600), 40.0 * (i % 6))],
            -1,
        )
        path = folder / f"photo{i:04d}.jpg"
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def decode_rate(model: object, photos: list[Path]) -> float:
    """Photos per second through the decode workers alone (no model), as an index run uses them."""
    from xmodal.indexer.decode_pool import Work, decode_pool, prefetch, prepare
    from xmodal.indexer.models.preprocess import split_transform
    from xmodal.indexer.scanning import FoundFile

    split = split_transform(model.image_transform)  # type: ignore[attr-defined]
    size = model.preprocessing.size if model.preprocessing is not None else 224  # type: ignore[attr-defined]
    work = [Work(FoundFile(p, p.stat().st_size, p.stat().st_mtime_ns), None) for p in photos]
    started = time.perf_counter()
    with decode_pool(os.cpu_count() or 1, split.per_image, size) as pool:
        for _ in prefetch(pool, work, 32, prepare):
            pass
    return len(photos) / (time.perf_counter() - started)


def model_rate(model: object, batches: int = 4, batch: int = 32) -> float:
    """Photos per second through the model alone (preprocessed random pixels, batch 32)."""
    import torch

    size = model.preprocessing.size if model.preprocessing is not None else 224  # type: ignore[attr-defined]
    pixels = torch.rand(batch, 3, size, size)
    model.embed_pixels(pixels)  # type: ignore[attr-defined]  # warm-up: kernels, exports
    if model.device == "cuda":  # type: ignore[attr-defined]
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(batches):
        model.embed_pixels(pixels)  # type: ignore[attr-defined]
    if model.device == "cuda":  # type: ignore[attr-defined]
        torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - started)


def indexing(spec: str, device: str, photos: list[Path], work: Path) -> None:
    from xmodal.indexer import Indexer, load_model

    model = load_model(spec, device=device)  # type: ignore[arg-type]
    column = 1 if device == "cpu" else 2
    decode = decode_rate(model, photos)
    network = model_rate(model)
    summary = Indexer(work / f"idx-{device}", model=model).add_paths([photos[0].parent])
    load = summary.timings.get("load", 0.0)  # 0 here: the model was loaded above
    bottleneck = "decode" if decode < network else "model"
    _put(f"decode workers alone ({os.cpu_count()} processes), photos/s", f"{decode:.1f}", column)
    _put(f"model alone ({model.device}, batch 32), photos/s", f"{network:.1f}", column)
    _put("index run end to end, photos/s", f"{summary.embedded / summary.seconds:.1f}", column)
    _put(
        "index run without the model's load, photos/s",
        f"{summary.embedded / max(summary.seconds - load, 1e-9):.1f}",
        column,
    )
    _put("bottleneck (the slower of decode and model)", bottleneck, column)


def search(count: int, dim: int, gpu: bool) -> None:
    import faiss

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(count, 200, replace=False)] + 0.01
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(vectors)
    started = time.perf_counter()
    _, want = cpu.search(queries, 10)
    cpu_ms = (time.perf_counter() - started) * 1000 / len(queries)
    _put(f"exact search, {count:,} x {dim} vectors, ms/query (200 queries, k=10)", f"{cpu_ms:.2f}", 1)
    if not gpu:
        return
    resources = faiss.StandardGpuResources()
    index = faiss.index_cpu_to_gpu(resources, 0, cpu)
    index.search(queries[:10], 10)  # warm-up
    started = time.perf_counter()
    _, got = index.search(queries, 10)
    gpu_ms = (time.perf_counter() - started) * 1000 / len(queries)
    _put(f"exact search, {count:,} x {dim} vectors, ms/query (200 queries, k=10)", f"{gpu_ms:.2f}", 2)
    same = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got)]))
    _put("GPU top-10 equal to CPU's (share)", f"{same:.3f}", 2)


def _put(measure: str, value: str, column: int) -> None:
    ROWS.setdefault(measure, ["", ""])[column - 1] = value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=None, help="photos to index (default 512 with a GPU, 64 without)")
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--model", default="xmodal-lite", help="model spec (e.g. ViT-B-32:/path/weights.pt)")
    args = parser.parse_args()

    facts = hardware()
    print(f"torch {facts['torch']}; onnxruntime providers {', '.join(facts['onnxruntime'])}")  # type: ignore[arg-type]
    if facts["cuda"]:
        faiss_gpu = "yes" if facts["faiss_gpu"] else "NO (faiss-cpu installed: see README, GPUs)"
        print(f"GPU: {facts['gpu']}; FAISS GPU: {faiss_gpu}")
    else:
        print("NO GPU: torch sees no CUDA device on this machine. Measuring the CPU half only.")
    photos_count = args.photos or (512 if facts["cuda"] else 64)
    with tempfile.TemporaryDirectory(prefix="xmodal-gpu-check-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("XMODAL_CACHE", str(work / "cache"))  # a script, not the library: exports stay here
        photos = make_photos(work / "photos", photos_count)
        indexing(args.model, "cpu", photos, work)
        if facts["cuda"]:
            indexing(args.model, "cuda", photos, work)
        search(args.vectors, args.dim, bool(facts["faiss_gpu"]))
    width = max(len(name) for name in ROWS)
    print()
    print(f"{'measure':<{width}}  {'CPU':>10}  {'GPU':>10}")
    for name, (cpu, gpu) in ROWS.items():
        print(f"{name:<{width}}  {cpu:>10}  {gpu or '-':>10}")
    if not facts["cuda"]:
        print("\nNo GPU here: the GPU column is empty. Run this on a CUDA machine for the comparison.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

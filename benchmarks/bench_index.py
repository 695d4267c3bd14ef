"""Indexing throughput on a folder of 12-MP JPEGs, against a plain loop and the machine's limit.

    python benchmarks/bench_index.py [--photos 256] [--model xmodal-lite] [--json]

Prints, from one run:
  plain_loop_ips   open, full decode, convert, preprocess, model; batches of 32; one process
  xmodal_ips       `Indexer.add_paths` on the same folder (fresh index), model load excluded
  limit_ips        cores / (CPU s to draft-decode + resize one photo + CPU s of the model per photo)
and the ratios xmodal/plain and xmodal/limit. The folder is generated (not committed) in --dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xmodal.indexer import Indexer, load_model
from xmodal.indexer.images import decode_image


def make_photos(folder: Path, count: int, size: tuple[int, int] = (4000, 3000), seed: int = 0) -> list[Path]:
    """Photo-like 12-MP JPEGs (about 2.3 MB): smooth colour fields, mid-scale texture and a
    little sensor noise. Their decode costs match real photos here: ~130 ms full, ~20 ms draft."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:04d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        coarse = np.asarray(
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC),
            dtype=np.float32,
        )
        texture = np.asarray(
            Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).resize(
                size, Image.Resampling.BILINEAR
            ),
            dtype=np.float32,
        )
        noise = rng.integers(-3, 4, (size[1], size[0], 1)).astype(np.float32)
        Image.fromarray(np.clip(0.7 * coarse + 0.3 * texture + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
    return paths


def plain_loop(model, paths: list[Path], batch_size: int = 32) -> float:
    transform = model.image_transform
    started = time.perf_counter()
    for start in range(0, len(paths), batch_size):
        batch = []
        for path in paths[start : start + batch_size]:
            with Image.open(path) as im:
                batch.append(transform(im.convert("RGB")))
        model.embed_pixels(torch.stack(batch))
    return len(paths) / (time.perf_counter() - started)


def machine_limit(model, paths: list[Path], batch_size: int = 32) -> tuple[float, float, float]:
    """(limit images/s, CPU s per photo to draft-decode+resize, CPU s per photo of the model)."""
    transform = model.image_transform
    # One intra-op thread: each part's own CPU cost, without OpenMP spin-waiting counted as work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cpu = time.process_time()
        pixels = [transform(decode_image(p, 224).image) for p in paths]
        decode_cpu = (time.process_time() - cpu) / len(paths)
        cpu = time.process_time()
        for start in range(0, len(pixels), batch_size):
            model.embed_pixels(torch.stack(pixels[start : start + batch_size]))
        model_cpu = (time.process_time() - cpu) / len(paths)
    finally:
        torch.set_num_threads(threads)
    cores = os.cpu_count() or 1
    return cores / (decode_cpu + model_cpu), decode_cpu, model_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=256)
    parser.add_argument("--model", default=None)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "xmodal-bench-12mp-v2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    paths = make_photos(args.dir, args.photos)
    model = load_model(args.model)
    warm_up = torch.stack([model.image_transform(Image.new("RGB", (300, 300))) for _ in range(32)])
    for _ in range(3):  # onnxruntime reaches its speed after a few batches (memory arenas)
        model.embed_pixels(warm_up)
    # The index run embeds through the model's exported image path (made and loaded once per
    # process): load and warm it too, so that the run below excludes loading as its docstring says.
    from xmodal.indexer.preparation import with_exported_image_path

    for _ in range(3):
        with_exported_image_path(model).embed_pixels_for_index(warm_up)

    plain_ips = plain_loop(model, paths)
    limit_ips, decode_cpu, model_cpu = machine_limit(model, paths)
    index_dir = Path(tempfile.mkdtemp(prefix="xmodal-bench-index-"))
    try:
        summary = Indexer(index_dir, model=model).add_paths(paths)  # the folder may hold more from a larger run
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
    xmodal_ips = summary.images_per_second
    result = {
        "photos": len(paths),
        "cores": os.cpu_count(),
        "plain_loop_ips": round(plain_ips, 2),
        "xmodal_ips": round(xmodal_ips, 2),
        "limit_ips": round(limit_ips, 2),
        "decode_cpu_ms": round(1000 * decode_cpu, 1),
        "model_cpu_ms": round(1000 * model_cpu, 1),
        "speedup_vs_plain": round(xmodal_ips / plain_ips, 2),
        "fraction_of_limit": round(xmodal_ips / limit_ips, 3),
        "stage_seconds": summary.timings,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")


if __name__ == "__main__":
    main()

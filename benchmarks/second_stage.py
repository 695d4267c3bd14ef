"""The second stage's gain over the first stage, both directions, on the test split and a held-out set,
and what each stage costs per query.

    python -m benchmarks.second_stage --data ../shared/datasets/flickr8k-1k [--model xmodal-lite] \
        [--parts test,heldout,cost]

test     the flickr8k-1k test split (200 photos, 1,000 captions) through the product itself: a temporary
         index made by the indexer, searched by the engine with the second stage off (`--no-rerank`), with
         QB-Norm only (RerankOptions(learned=False)) and with the default pipeline. image→text as
         `xmodal eval` reports it (the evaluated photos are the bank, each query left out of its own).
heldout  the shift protocol's held-out concepts (benchmarks/shift_protocol.py: 5 concepts of the TRAIN
         split, every photo mentioning one kept out of training, pools of up to 100 photos), macro over
         the concepts, with the product's default second stage as shift_protocol.pipeline_orders applies
         it (the fusion with the shipped weights, linear projection and two-hop bank of the fold's photos).
         The in-distribution pools are printed beside it.
cost     p50 ms per query (single queries, 200 captions of the test index, text→image): the first stage
         (FAISS), the whole search with the default second stage, and their difference; busy machine.

Only measurements: nothing here is fitted, and nothing is chosen from these figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from xmodal.search.rerank.stages import RerankOptions

KS = (1, 5, 10)


def _line(name: str, r: dict[str, float]) -> str:
    return f"  {name:26s} " + "  ".join(f"{k} {v:5.1f}" for k, v in r.items())


def _gains(rows: dict[str, dict[str, float]], base: str) -> None:
    for name, r in rows.items():
        if name != base:
            print(f"  gain {name:21s} " + "  ".join(f"{k} {r[k] - rows[base][k]:+5.1f}" for k in r))


def _recall(ranked: np.ndarray, relevant: list[set[int]]) -> list[float]:
    return [
        100.0 * float(np.mean([bool(rel.intersection(row[:k].tolist())) for row, rel in zip(ranked, relevant)]))
        for k in KS
    ]


def test_split(data: Path, model_spec: str, cost: bool) -> None:
    from training.offline_head import flickr_pairs
    from xmodal.indexer.indexing import Indexer
    from xmodal.indexer.models.embedding import load_model
    from xmodal.indexer.store.schema import ImageRow, TextRow
    from xmodal.indexer.text_indexing import TextIndexer
    from xmodal.search.engine import SearchEngine

    pairs = flickr_pairs(data, "test")
    model = load_model(model_spec)
    with tempfile.TemporaryDirectory(prefix="xmodal-second-stage-") as tmp:
        t0 = time.perf_counter()
        images = [os.path.abspath(p.image) for p in pairs]
        Indexer(tmp, model=model).add_paths(images)
        TextIndexer(tmp, model=model).add_texts([(image, c) for image, p in zip(images, pairs) for c in p.captions])
        print(
            f"test split: {len(pairs)} photos indexed with {model_spec} in {time.perf_counter() - t0:.0f}s", flush=True
        )
        engine = SearchEngine.open(tmp, model=model)
        try:
            store = engine.store
            image_ids, image_vecs = store.metadata.vectors(ImageRow)
            text_ids, text_vecs = store.metadata.vectors(TextRow)
            with store.metadata.session() as s:
                path_of = dict(s.query(ImageRow.id, ImageRow.path).all())
                source_of = dict(s.query(TextRow.id, TextRow.source).all())
            image_of_path = {p: i for i, p in path_of.items()}
            rel_t2i = [{image_of_path[source_of[int(t)]]} for t in text_ids]
            captions_of: dict[str, set[int]] = {}
            for t, source in source_of.items():
                captions_of.setdefault(source, set()).add(int(t))
            rel_i2t = [captions_of.get(path_of[int(i)], set()) for i in image_ids]
            stages: dict[str, RerankOptions | bool] = {
                "first stage": False,
                "QB-Norm only": RerankOptions(learned=False),
                "default": True,
            }
            for direction, queries, target, kind, rel in (
                ("text->image", text_vecs, "image", "text", rel_t2i),
                ("image->text", image_vecs, "text", "image", rel_i2t),
            ):
                rows = {}
                for name, rerank in stages.items():
                    ranked = engine.search_vectors(queries, max(KS), target=target, rerank=rerank, query_kind=kind)[1]
                    rows[name] = dict(zip((f"R@{k}" for k in KS), _recall(ranked, rel)))
                print(f"{direction} ({len(queries)} queries)")
                for name, r in rows.items():
                    print(_line(name, r))
                _gains(rows, "first stage")
            if cost:
                _cost(engine, text_vecs[:200])
        finally:
            engine.close()


def _cost(engine, queries: np.ndarray) -> None:
    first, whole = [], []
    for q in queries:  # interleaved, so both see the same load
        t0 = time.perf_counter()
        engine.search_vectors(q[None], 10, target="image", rerank=False, query_kind="text")
        t1 = time.perf_counter()
        engine.search_vectors(q[None], 10, target="image", rerank=True, query_kind="text")
        t2 = time.perf_counter()
        first.append(1000 * (t1 - t0))
        whole.append(1000 * (t2 - t1))
    f, w = float(np.median(first)), float(np.median(whole))
    print(
        f"cost per query, text->image, {len(queries)} single queries (p50 ms, busy machine): "
        f"first stage {f:.2f}, first + second {w:.2f}, second stage {w - f:.2f}"
    )


def heldout(data: Path, model_spec: str) -> None:
    import subprocess
    import sys

    method = "duo-x3-out-0.3" if model_spec == "xmodal-lite-duo" else "today-x3-out-0.3"
    root = Path(__file__).resolve().parent.parent
    # the data folder as given: the protocol's feature cache is keyed by its path
    cmd = [sys.executable, "-m", "benchmarks.shift_protocol", "--data", os.path.abspath(data), "--methods", method]
    cmd += ["--second-stage", "--data-dir", str(root / "data"), "--gains"]
    print("held-out concepts: " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/flickr8k-1k")
    ap.add_argument("--model", default="xmodal-lite")
    ap.add_argument("--parts", default="test,heldout,cost")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if parts & {"test", "cost"}:
        test_split(Path(args.data).resolve(), args.model, "cost" in parts)
    if "heldout" in parts:
        heldout(Path(args.data), args.model)


if __name__ == "__main__":
    main()

"""Building the FAISS cache from the store within a memory budget.

    python benchmarks/bench_build.py [--vectors 5000000] [--dim 384] [--budget 2GB]
        [--workdir DIR] [--db-url URL] [--queries 200] [--json]

1. fills a store with --vectors synthetic unit vectors (seeded clusters in a low-dimensional
   subspace plus noise, the structure of real embeddings; kept in --workdir for the next run);
2. in a fresh process, `IndexStore.optimize(memory_budget=...)` (what `xmodal optimize
   --memory-budget` runs) builds and saves the index: build time and that process's peak RSS;
3. in another fresh process, loads the saved index and runs --queries single queries (k=10):
   p50/p95 latency, and recall@10 against exact search over the store (streamed in blocks).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CLUSTERS = 4096
_SUBSPACE = 48


def synthetic(start: int, count: int, dim: int, seed: int = 0) -> np.ndarray:
    """Rows start..start+count of the synthetic collection (the same rows for the same seed)."""
    basis = np.random.default_rng(seed).normal(size=(_SUBSPACE, dim)).astype(np.float32)
    centres = np.random.default_rng(seed + 1).normal(size=(_CLUSTERS, _SUBSPACE)).astype(np.float32)
    rng = np.random.default_rng(seed + 2 + start)
    low = centres[rng.integers(0, _CLUSTERS, count)] + 0.6 * rng.normal(size=(count, _SUBSPACE)).astype(np.float32)
    x = (
        low @ basis
        + 0.25
        * np.sqrt(_SUBSPACE / dim)
        * rng.normal(size=(count, dim)).astype(np.float32)
        * np.linalg.norm(basis, axis=0).mean()
    )
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def fill(index_dir: Path, db_url: str | None, n: int, dim: int) -> None:
    from xmodal.indexer.store.index_store import IndexStore
    from xmodal.indexer.store.schema import ImageRow, utcnow

    store = IndexStore.open(index_dir, db_url, create=True)
    try:
        store.check_model("synthetic:bench", dim)
        have = store.metadata.count(ImageRow)
        now, step = utcnow(), 20_000
        for start in range(have, n, step):
            vecs = synthetic(start, min(step, n - start), dim)
            rows = [
                dict(
                    path=f"/synthetic/{start + i:09d}.jpg",
                    size=1,
                    mtime_ns=1,
                    content_hash="",
                    width=1,
                    height=1,
                    model="synthetic:bench",
                    indexed_at=now,
                    vector=v.astype("<f4").tobytes(),
                )
                for i, v in enumerate(vecs)
            ]
            with store.metadata.engine.begin() as connection:
                connection.execute(ImageRow.__table__.insert(), rows)
            print(f"filled {start + len(rows):,} / {n:,}", file=sys.stderr, end="\r")
        with store.metadata.session() as s, s.begin():
            store.metadata.bump_generation(s, "image")
    finally:
        store.close()


def build(index_dir: Path, db_url: str | None, budget: int) -> dict:
    from xmodal.indexer.store.index_store import IndexStore

    baseline = _rss_now()  # the interpreter, numpy, FAISS, SQLAlchemy: there before any vector is read
    store = IndexStore.open(index_dir, db_url)
    try:
        started = time.perf_counter()
        described = store.optimize(memory_budget=budget)
        seconds = time.perf_counter() - started
    finally:
        store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "build_seconds": round(seconds, 2),
        "peak_rss_bytes": peak,
        "baseline_rss_bytes": baseline,
        "index": described.get("image"),
    }


def _rss_now(field: str = "VmRSS") -> int:
    """From /proc/self/status: VmRSS (all resident pages), RssAnon (the process's own memory) or
    RssFile (pages of mapped files, e.g. the lean index's memory-mapped full vectors: the kernel
    reclaims them at will)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def query(index_dir: Path, db_url: str | None, queries: int, dim: int) -> dict:
    from xmodal.indexer.store.bounded_build import iter_vectors
    from xmodal.indexer.store.index_store import IndexStore
    from xmodal.indexer.store.schema import ImageRow

    store = IndexStore.open(index_dir, db_url)
    try:
        index = store.vectors("image")
        n = len(index)
        rng = np.random.default_rng(99)
        picked = np.sort(rng.choice(n, queries, replace=False))
        q = np.concatenate([synthetic(n + int(i), 1, dim) for i in picked])  # new points of the same distribution
        q = q + 0.05 * rng.normal(size=q.shape).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        latencies, found = [], []
        for row in q:
            started = time.perf_counter()
            _, ids = index.search(row[None, :], 10)
            latencies.append(time.perf_counter() - started)
            found.append(ids[0])
        # exact top-10 by blocks streamed from SQL (faiss contrib's exhaustive-search approach)
        best_s = np.full((queries, 10), -np.inf, dtype=np.float32)
        best_i = np.full((queries, 10), -1, dtype=np.int64)
        for ids, vecs in iter_vectors(store.metadata, ImageRow):
            s = q @ vecs.T
            all_s = np.concatenate([best_s, s], axis=1)
            all_i = np.concatenate([best_i, np.broadcast_to(ids, s.shape)], axis=1)
            top = np.argpartition(-all_s, 9, axis=1)[:, :10]
            best_s, best_i = np.take_along_axis(all_s, top, axis=1), np.take_along_axis(all_i, top, axis=1)
        recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, best_i)]))
    finally:
        store.close()
    ms = np.array(latencies) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "recall_at_10": round(recall, 4),
        "queries": queries,
        "query_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "query_rss_anon_bytes": _rss_now("RssAnon"),
        "query_rss_file_bytes": _rss_now("RssFile"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=5_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--budget", default="2GB")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the filled store between runs")
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--phase", choices=["all", "build", "query"], default="all", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from xmodal.indexer.store.bounded_build import parse_bytes

    budget = parse_bytes(args.budget)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xmodal-bench-build-"))
    index_dir = workdir / f"idx-{args.vectors}-{args.dim}"
    if args.phase == "build":
        print(json.dumps(build(index_dir, args.db_url, budget)))
        return
    if args.phase == "query":
        print(json.dumps(query(index_dir, args.db_url, args.queries, args.dim)))
        return
    started = time.perf_counter()
    fill(index_dir, args.db_url, args.vectors, args.dim)
    fill_s = time.perf_counter() - started
    result: dict = {"vectors": args.vectors, "dim": args.dim, "budget_bytes": budget, "fill_seconds": round(fill_s, 1)}
    for phase in ("build", "query"):
        cmd = [
            sys.executable,
            __file__,
            "--phase",
            phase,
            "--vectors",
            str(args.vectors),
            "--dim",
            str(args.dim),
            "--budget",
            args.budget,
            "--workdir",
            str(workdir),
            "--queries",
            str(args.queries),
        ]
        if args.db_url:
            cmd += ["--db-url", args.db_url]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        result.update(json.loads(out.stdout.strip().splitlines()[-1]))
    result["peak_rss_within_budget"] = result["peak_rss_bytes"] <= budget
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()

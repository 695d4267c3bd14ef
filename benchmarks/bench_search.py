"""Search benchmark: build a synthetic index through indexer.vector_index and time single queries.

    python3 benchmarks/bench_search.py --n 1000000 --dim 512 [--lean] [--json]

Synthetic data ("embedding-like", not uniform noise), generated in blocks of 50,000 rows, each
block from its own seeded generator so a smaller --n is a prefix of a larger one:

    latent  z = 0.85 * C[c] + N(0, I_r)       r = 64 latent dims, c ~ one of 512 cluster centres C ~ N(0, I_r)
    signal  s = z @ (diag(spectrum) B)         B: r x dim Gaussian basis, spectrum decaying 1/sqrt(1 + i/8)
    x       = normalize( normalize(s) + 0.7 * m + 0.75 * g / sqrt(dim) )
              m: a fixed common direction (real embeddings are anisotropic), g ~ N(0, I_dim) noise

Queries are fresh draws from the same distribution (not copies of base rows). Ground truth is
exact inner-product search (faiss IndexFlatIP over the base, queries batched). Data, queries and
ground truth are cached under --cache (default /tmp/xmodal_bench).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import faiss  # noqa: E402
import numpy as np

from xmodal.indexer.store.vector_index import VectorIndex, choose_plan  # noqa: E402

BLOCK = 50_000
RANK = 64
CENTRES = 512


def _model(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0])
    centres = rng.standard_normal((CENTRES, RANK)).astype(np.float32)
    spectrum = (1.0 / np.sqrt(1.0 + np.arange(RANK) / 8.0)).astype(np.float32)
    basis = (rng.standard_normal((RANK, dim)).astype(np.float32) / np.sqrt(dim)) * spectrum[:, None]
    mean = rng.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    return centres, basis, mean


def _sample(rng: np.random.Generator, n: int, dim: int, model) -> np.ndarray:
    centres, basis, mean = model
    c = rng.integers(0, CENTRES, n)
    z = 0.85 * centres[c] + rng.standard_normal((n, RANK), dtype=np.float32)
    s = z @ basis
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    x = s + 0.7 * mean + (0.75 / np.sqrt(dim)) * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def add_synthetic_photos(store: Any, rows: int, seed: int = 7) -> None:
    """`rows` image rows with embedding-like vectors written straight to SQL (under the store's
    write lock, 5,000 a transaction), then the FAISS cache built at the size's index type: the large
    indexes of the serving benchmarks, without embedding a photo."""
    from xmodal.indexer.store.schema import ImageRow, utcnow, vector_to_blob

    spec, dim, now = store.model_spec or "", int(store.dim or 0), utcnow()
    with store.write_lock():
        for start in range(0, rows, 5000):
            stop = min(rows, start + 5000)
            vectors = make_vectors(stop - start, dim, seed=seed + start)
            with store.metadata.session() as s, s.begin():
                store.metadata.insert_rows(
                    s,
                    ImageRow,
                    [
                        dict(
                            path=f"/synthetic/{i // 1000:04d}/img_{i:07d}.jpg",
                            size=100_000 + i,
                            mtime_ns=1_600_000_000_000_000_000 + i,
                            content_hash=f"synthetic{i}",
                            width=640,
                            height=480,
                            taken_at=None,
                            model=spec,
                            indexed_at=now,
                            vector=vector_to_blob(vectors[i - start]),
                        )
                        for i in range(start, stop)
                    ],
                )
    store.optimize()  # the FAISS index type for this size, saved at the current generation


def make_vectors(n: int, dim: int, seed: int, out: np.ndarray | None = None) -> np.ndarray:
    model = _model(dim, seed)
    x = out if out is not None else np.empty((n, dim), dtype=np.float32)
    for b, start in enumerate(range(0, n, BLOCK)):
        stop = min(n, start + BLOCK)
        x[start:stop] = _sample(np.random.default_rng([seed, 1, b]), stop - start, dim, model)
    return x


def make_queries(nq: int, dim: int, seed: int) -> np.ndarray:
    return _sample(np.random.default_rng([seed, 2]), nq, dim, _model(dim, seed))


def cached_data(n: int, dim: int, nq: int, k: int, seed: int, cache: Path):
    """(base memmap, queries, ground-truth ids) — generated once, then read from cache."""
    cache.mkdir(parents=True, exist_ok=True)
    tag = f"v2_n{n}_d{dim}_s{seed}"
    base_path = cache / f"base_{tag}.f32"
    if not base_path.exists() or base_path.stat().st_size != n * dim * 4:
        tmp = base_path.with_suffix(".tmp")
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        make_vectors(n, dim, seed, out=mm)
        mm.flush()
        del mm
        tmp.replace(base_path)
    base = np.load(base_path, mmap_mode="r")
    queries = make_queries(nq, dim, seed)
    gt_path = cache / f"gt_{tag}_q{nq}_k{k}.npy"
    if gt_path.exists():
        gt = np.load(gt_path)
    else:
        gt = exact_topk(base, queries, k)
        np.save(gt_path, gt)
    return base, queries, gt


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, block: int = 200_000) -> np.ndarray:
    """Exact top-k row numbers by inner product, base scanned in blocks (faiss IndexFlatIP)."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(base), block):
        flat = faiss.IndexFlatIP(base.shape[1])
        flat.add(np.ascontiguousarray(base[start : start + block]))
        s, i = flat.search(queries, k)
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, i + start], axis=1)
        order = np.argsort(-s_all, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(s_all, order, axis=1)
        best_i = np.take_along_axis(i_all, order, axis=1)
    return best_i


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth))
    return hits / (len(truth) * k)


def time_single_queries(index: VectorIndex, queries: np.ndarray, k: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    """One query per call, as a user's search does; returns (latencies in ms, ids)."""
    for q in queries[:20]:  # warm-up (page cache, lazy structures)
        index.search(q[None, :], k, **kw)
    lat = np.empty(len(queries))
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for j, q in enumerate(queries):
        t0 = time.perf_counter()
        _, found = index.search(q[None, :], k, **kw)
        lat[j] = (time.perf_counter() - t0) * 1e3
        ids[j, : found.shape[1]] = found[0]
    return lat, ids


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--lean", action="store_true", help="memory-lean mode: IVF-PQ codes in RAM, full vectors memory-mapped"
    )
    ap.add_argument("--flat", action="store_true", help="force the exact flat index (baseline)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/xmodal_bench"))
    ap.add_argument("--nprobe", type=int, default=None, help="override the plan's nprobe")
    ap.add_argument(
        "--oversample", type=int, default=None, help="override the plan's re-scoring factor R (k*R candidates)"
    )
    ap.add_argument("--nlist", type=int, default=None, help="override the plan's nlist")
    ap.add_argument("--kind", default=None, help="override the plan's kind (flat, ivf_sq8, ivf_flat, ivf_pq)")
    ap.add_argument("--pq-m", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="override OpenMP threads for single queries")
    ap.add_argument("--sweep", default=None, help="comma-separated nprobe values to sweep after building")
    ap.add_argument("--sweep-oversample", default=None, help="comma-separated R values to sweep")
    ap.add_argument("--keep", type=Path, default=None, help="save the built index here and reuse it if present")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    base, queries, gt_rows = cached_data(args.n, args.dim, args.queries, args.k, args.seed, args.cache)
    data_s = time.perf_counter() - t0
    ids = np.arange(args.n, dtype=np.int64) * 3 + 7  # caller ids are not row numbers
    gt = ids[gt_rows]

    plan = choose_plan(args.n, args.dim, lean=args.lean)
    overrides = {
        "kind": "flat" if args.flat else args.kind,
        "nprobe": args.nprobe,
        "oversample": args.oversample,
        "nlist": args.nlist,
        "pq_m": args.pq_m,
        "query_threads": args.threads,
    }
    plan = plan.replace(**{k: v for k, v in overrides.items() if v is not None})

    store_dir = args.cache / f"index_v2_{plan.kind}_n{args.n}_d{args.dim}_s{args.seed}"
    t0 = time.perf_counter()
    loaded = None
    if args.keep is not None and Path(args.keep).exists():
        loaded = VectorIndex.load(args.keep, args.dim, lean=args.lean, use_gpu=False)
    if loaded is not None:
        index = loaded[0]
        index.plan = index.plan.replace(
            nprobe=plan.nprobe, oversample=plan.oversample, query_threads=plan.query_threads, lean=args.lean
        )
    else:
        index = VectorIndex(args.dim, plan=plan, use_gpu=False)
        index.rebuild(base, ids, plan)
        if args.lean or args.keep is not None:
            # lean mode keeps full vectors in a memory-mapped file beside the saved index
            path = args.keep or (store_dir / "index.faiss")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            index.save(path, generation=0)
            index = VectorIndex.load(path, args.dim, lean=args.lean, use_gpu=False)[0]
            index.plan = index.plan.replace(
                nprobe=plan.nprobe, oversample=plan.oversample, query_threads=plan.query_threads
            )
    build_s = time.perf_counter() - t0

    def run(**plan_kw) -> dict:
        if plan_kw:
            index.plan = index.plan.replace(**plan_kw)
        lat, found = time_single_queries(index, queries, args.k)
        return {
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p95_ms": round(float(np.percentile(lat, 95)), 3),
            "recall@10": round(recall_at_k(found, gt, min(10, args.k)), 4),
        }

    result = {
        "n": args.n,
        "dim": args.dim,
        "lean": args.lean,
        "plan": index.plan.describe(),
        **run(),
        "bytes_per_vector": round(index.resident_bytes() / max(1, len(index)), 1),
        "bytes_per_vector_note": index.resident_note(),
        "build_s": round(build_s, 1),
        "data_s": round(data_s, 1),
        "queries": args.queries,
        "threads": faiss.omp_get_max_threads(),
    }
    sweep = []
    if args.sweep or args.sweep_oversample:
        nprobes = [int(x) for x in args.sweep.split(",")] if args.sweep else [index.plan.nprobe]
        rs = [int(x) for x in args.sweep_oversample.split(",")] if args.sweep_oversample else [index.plan.oversample]
        for npb in nprobes:
            for r in rs:
                row = {"nprobe": npb, "oversample": r, **run(nprobe=npb, oversample=r)}
                sweep.append(row)
                if not args.json:
                    print(json.dumps(row), flush=True)
        result["sweep"] = sweep
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key != "sweep":
                print(f"{key:>22}: {value}")
    return result


if __name__ == "__main__":
    main()

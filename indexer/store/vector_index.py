"""Vectors in FAISS, with ids equal to the SQL row ids, saved atomically beside the database.

The file is a cache of the vectors kept in SQL: each save records the SQL generation it reflects,
and an index whose generation differs is rebuilt from SQL on open (see indexer.index_store).

Index type is chosen by collection size (``choose_plan``):

* ``flat``    exact inner-product search (IndexFlatIP), while a single query over everything is fast;
* ``ivf_*``   an inverted-file index (coarse k-means lists; codes SQ8, PQ or full floats) that
              proposes ``k * oversample`` candidates, which are then re-scored exactly against the
              full-precision vectors, so returned scores are exact inner products;
* lean mode   IVF-PQ codes in RAM and the full vectors in a float32 file beside the saved index,
              memory-mapped, read only for the few re-scored candidates.

Full-precision vectors for re-scoring come from the index's own vector store (RAM, or the
memory-mapped ``.f32`` file once saved/loaded), or from a caller-supplied ``vector_source``
callable (ids -> vectors, e.g. read from SQL).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

__all__ = ["IndexPlan", "VectorIndex", "choose_plan", "gpu_available", "FLAT_MAX_ELEMENTS"]

# Exact flat search stays below ~1 ms per single query (one thread) up to about this many stored floats
# (n * dim); measured on this machine (2-core AMD EPYC, AVX-512): see benchmarks/RESULTS.md.
FLAT_MAX_ELEMENTS = 16_384 * 512
# Below this size the lean mode is not worth it (PQ training needs ~10k points; memory is small anyway).
LEAN_MIN_VECTORS = 50_000
# An approximate index is not trained on fewer vectors than this (k-means and PQ need samples).
MIN_TRAIN_VECTORS = 4_096
# Filtered searches whose allowed set is at most this big are answered by exact search over the
# allowed vectors only (faster than probing the IVF and never short of k hits).
EXACT_FILTER_MAX = 50_000

def gpu_available() -> bool:
    """True when this FAISS build has GPU support and a CUDA GPU is visible."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@dataclasses.dataclass(frozen=True)
class IndexPlan:
    """How the index is built and searched.

    kind: "flat" (exact), "ivf_flat", "ivf_sq8", "ivf_pq" (8-bit PQ) or "ivf_pqfs" (4-bit fast-scan PQ).
    nlist/nprobe: IVF lists and lists probed per query; pq_m: PQ sub-quantizers;
    oversample: the IVF proposes k*oversample candidates that are re-scored exactly;
    query_threads: OpenMP threads for a single query (thread start-up dominates at nq=1);
    lean: full vectors memory-mapped rather than held in RAM.
    """

    kind: str = "flat"
    nlist: int = 0
    nprobe: int = 0
    pq_m: int = 0
    oversample: int = 1
    train_size: int = 0
    kmeans_iter: int = 10
    query_threads: int = 1
    lean: bool = False

    @property
    def approximate(self) -> bool:
        return self.kind != "flat"

    def replace(self, **changes) -> IndexPlan:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        if not self.approximate:
            return "flat (exact IndexFlatIP)"
        codes = {"ivf_pq": f"PQ{self.pq_m}x8", "ivf_pqfs": f"PQ{self.pq_m}x4fs"}.get(self.kind, self.kind[4:].upper())
        return (
            f"IVF{self.nlist},{codes} nprobe={self.nprobe} rescore k*{self.oversample}"
            f"{' lean(mmap vectors)' if self.lean else ''} threads/query={self.query_threads}"
        )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> IndexPlan:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def _pow2_near(x: float) -> int:
    return 1 << max(0, round(math.log2(max(1.0, x))))


def _divisor_at_most(dim: int, m: int) -> int:
    """The largest even divisor of dim not above m (PQ needs dim % m == 0; fast-scan an even m)."""
    for cand in range(min(m, dim), 1, -1):
        if dim % cand == 0 and cand % 2 == 0:
            return cand
    return 1


def choose_plan(n: int, dim: int, lean: bool = False, gpu: bool | None = None) -> IndexPlan:
    """The index type for n vectors of dimension dim (numbers measured in benchmarks/RESULTS.md)."""
    small = n < LEAN_MIN_VECTORS if lean else n * dim <= FLAT_MAX_ELEMENTS
    if small:
        return IndexPlan("flat")
    nlist = min(16_384, max(64, _pow2_near(4 * math.sqrt(n))))
    train = min(n, max(nlist * 39, 20_000))  # k-means wants >= 39 points a list
    # probe 1/32 of the lists at 1M (measured), more of them on smaller collections, where
    # scanning ~30k codes is still cheap: recall rises for free
    nprobe = min(nlist, max(16, math.ceil(nlist * max(1 / 32, min(1 / 4, 30_000 / n)))))
    oversample = 20 if lean else 40  # lean re-scoring reads memory-mapped vectors: fewer candidates
    if gpu if gpu is not None else gpu_available():
        # GPU FAISS has no fast-scan PQ: 8-bit PQ codes of dim/8 bytes (untested here: no GPU)
        return IndexPlan("ivf_pq", nlist=nlist, nprobe=nprobe, pq_m=_divisor_at_most(dim, dim // 8),
                         oversample=oversample, train_size=train, lean=lean)
    # 4-bit fast-scan PQ (dim/8 bytes a vector at dim 512) proposes k*oversample candidates that
    # are re-scored exactly; at 1M x 512 it beat IVF-SQ8 on latency for the same recall
    pq_m = max(dim // 4, min(dim // 2, 64))
    if lean:  # <= 64 bytes of codes, so codes + ids + id mapping stay under ~128 bytes a vector
        pq_m = min(pq_m, 128)
    pq_m = _divisor_at_most(dim, pq_m)
    return IndexPlan("ivf_pqfs", nlist=nlist, nprobe=nprobe, pq_m=pq_m, oversample=oversample,
                     train_size=train, lean=lean)


def _build_faiss(plan: IndexPlan, dim: int) -> faiss.Index:
    ip = faiss.METRIC_INNER_PRODUCT
    quantizer = faiss.IndexFlatIP(dim)
    if plan.kind == "ivf_flat":
        index = faiss.IndexIVFFlat(quantizer, dim, plan.nlist, ip)
    elif plan.kind == "ivf_sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, plan.nlist, faiss.ScalarQuantizer.QT_8bit, ip)
    elif plan.kind == "ivf_pq":
        index = faiss.IndexIVFPQ(quantizer, dim, plan.nlist, plan.pq_m, 8, ip)
    elif plan.kind == "ivf_pqfs":
        index = faiss.IndexIVFPQFastScan(quantizer, dim, plan.nlist, plan.pq_m, 4, ip)
    else:
        raise ValueError(f"unknown index kind {plan.kind!r}")
    index.cp.niter = plan.kmeans_iter
    if hasattr(index, "pq"):
        index.pq.cp.niter = plan.kmeans_iter
    index.own_fields = True
    quantizer.this.disown()
    return index


class _VectorStore:
    """Full-precision vectors by caller id: rows in a base array (RAM or memmap) plus a RAM tail.

    Lookup is by binary search over the sorted live ids; removed rows stay as garbage until the
    next save, which writes the live vectors compacted in id order.
    """

    def __init__(self, dim: int, base: np.ndarray | None = None, base_ids: np.ndarray | None = None) -> None:
        self.dim = dim
        self.base = base if base is not None else np.zeros((0, dim), dtype=np.float32)
        self.tail = np.zeros((0, dim), dtype=np.float32)
        self.tail_len = 0
        ids = base_ids if base_ids is not None else np.zeros(0, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self.sorted_ids = np.ascontiguousarray(ids[order], dtype=np.int64)
        self.sorted_rows = order.astype(np.int64)
        self.dirty = base is None
        self.file: Path | None = None  # the .f32 file backing `base`, when memory-mapped

    def __len__(self) -> int:
        return len(self.sorted_ids)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id, -1 where absent."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.sorted_ids) == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self.sorted_ids, ids)
        pos_c = np.minimum(pos, len(self.sorted_ids) - 1)
        found = self.sorted_ids[pos_c] == ids
        return np.where(found, self.sorted_rows[pos_c], -1)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        nb = len(self.base)
        if self.tail_len == 0 or (len(rows) and rows.max() < nb):
            # plain fancy indexing: sorting the rows first measured slower, memory-mapped or not
            return np.asarray(self.base[rows])
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        in_base = rows < nb
        out[in_base] = self.base[rows[in_base]]
        out[~in_base] = self.tail[rows[~in_base] - nb]
        return out

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.remove(ids)
        m = len(ids)
        if self.tail_len + m > len(self.tail):
            grown = np.empty((max(2 * len(self.tail), self.tail_len + m, 1024), self.dim), dtype=np.float32)
            grown[: self.tail_len] = self.tail[: self.tail_len]
            self.tail = grown
        self.tail[self.tail_len: self.tail_len + m] = vectors
        rows = np.arange(len(self.base) + self.tail_len, len(self.base) + self.tail_len + m, dtype=np.int64)
        self.tail_len += m
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.sorted_ids) == 0 or (ids.min() > self.sorted_ids[-1] and np.all(np.diff(ids) > 0)):
            self.sorted_ids = np.concatenate([self.sorted_ids, ids])
            self.sorted_rows = np.concatenate([self.sorted_rows, rows])
        else:
            all_ids = np.concatenate([self.sorted_ids, ids])
            all_rows = np.concatenate([self.sorted_rows, rows])
            order = np.argsort(all_ids, kind="stable")
            self.sorted_ids, self.sorted_rows = all_ids[order], all_rows[order]
        self.dirty = True

    def remove(self, ids: np.ndarray) -> None:
        if len(self.sorted_ids) == 0 or len(ids) == 0:
            return
        keep = ~np.isin(self.sorted_ids, np.asarray(ids, dtype=np.int64))
        if not keep.all():
            self.sorted_ids, self.sorted_rows = self.sorted_ids[keep], self.sorted_rows[keep]
            self.dirty = True

    def live(self, chunk: int = 65_536):
        """(ids, vectors) of the live rows in id order, in chunks."""
        for start in range(0, len(self.sorted_ids), chunk):
            ids = self.sorted_ids[start: start + chunk]
            yield ids, self.gather(self.sorted_rows[start: start + chunk])

    def resident_bytes(self) -> int:
        mapping = self.sorted_ids.nbytes + self.sorted_rows.nbytes
        vectors = 0 if isinstance(self.base, np.memmap) else self.base.nbytes
        return mapping + vectors + self.tail.nbytes


class VectorIndex:
    """Inner-product search over unit vectors keyed by int64 ids."""

    def __init__(
        self,
        dim: int,
        index: faiss.Index | None = None,
        use_gpu: bool | None = None,
        *,
        plan: IndexPlan | None = None,
        lean: bool = False,
        auto_optimize: bool = True,
        vector_source: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """plan: how to index (default: exact flat until `optimize`/auto-switch picks by size);
        lean: prefer the memory-lean plan when switching; auto_optimize: switch the index type by
        itself when a growing collection outgrows its plan; vector_source: ids -> full vectors for
        re-scoring, instead of the index's own vector store."""
        self.dim = dim
        # an approximate plan needs vectors to train on: until rebuild/optimize, hold them exactly
        self._wanted_plan = plan if plan is not None and plan.approximate and index is None else None
        self.plan = plan if plan is not None and self._wanted_plan is None else IndexPlan("flat")
        if index is None:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._index = index
        self._store = _VectorStore(dim) if self.plan.approximate else None
        self.lean = lean or self.plan.lean
        self.auto_optimize = auto_optimize
        self.vector_source = vector_source
        self._use_gpu = gpu_available() if use_gpu is None else use_gpu
        self._search_index: faiss.Index | None = None  # GPU copy, made lazily
        self._trained_n = 0

    def __len__(self) -> int:
        return int(self._index.ntotal)

    # ------------------------------------------------------------------ building

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vector dimension {vectors.shape[-1]} does not match the index's {self.dim}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.plan.approximate:
            # upsert: an id is stored once, so its old codes go before the new ones come in
            present = ids[self._store.rows_of(ids) >= 0]
            if len(present):
                self._index.remove_ids(faiss.IDSelectorBatch(present))
            self._store.add(ids, vectors)
        elif len(self):
            present = np.isin(ids, faiss.vector_to_array(self._index.id_map))
            if present.any():
                self._index.remove_ids(faiss.IDSelectorBatch(ids[present]))
        self._index.add_with_ids(vectors, ids)
        self._search_index = None
        if self.auto_optimize and self.needs_optimize():
            self.optimize()

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._index.remove_ids(faiss.IDSelectorBatch(ids))
        if self._store is not None:
            self._store.remove(ids)
        self._search_index = None
        if self.auto_optimize and self.plan.approximate and self.needs_optimize():
            self.optimize()  # shrank well below the flat threshold: back to exact search

    def needs_optimize(self) -> bool:
        """True when the collection has outgrown (or shrunk below) its index type."""
        n = len(self)
        want = choose_plan(n, self.dim, self.lean, self._use_gpu)
        if not self.plan.approximate:
            # hysteresis: switch a little past the threshold, so add/remove near it does not flap
            return want.approximate and n * self.dim > 1.25 * FLAT_MAX_ELEMENTS
        if not want.approximate:
            return n * self.dim < 0.5 * FLAT_MAX_ELEMENTS
        return n > 4 * max(1, self._trained_n)  # lists grew long: retrain with more of them

    def optimize(self, plan: IndexPlan | None = None) -> None:
        """Rebuild with the plan for the current size (`xmodal optimize`)."""
        ids, vectors = self.vectors()
        self.rebuild(vectors, ids, plan if plan is not None else self._wanted_plan)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All stored (ids, vectors)."""
        if not self.plan.approximate:
            flat = faiss.downcast_index(self._index.index)
            n = int(flat.ntotal)
            vecs = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim).copy()
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            return ids, vecs
        parts = list(self._store.live())
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def rebuild(self, vectors: np.ndarray, ids: np.ndarray, plan: IndexPlan | None = None, seed: int = 1234) -> None:
        """Replace the contents with (ids, vectors), training the plan's index (default: chosen by size).

        vectors may be a memory-mapped array; it is read in chunks.
        """
        n = len(ids)
        plan = plan if plan is not None else choose_plan(n, self.dim, self.lean, self._use_gpu)
        if plan.approximate and n < MIN_TRAIN_VECTORS:  # too few to train on: stay exact for now
            self._wanted_plan, plan = plan, IndexPlan("flat")
        else:
            self._wanted_plan = None
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not plan.approximate:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            for start in range(0, n, 65_536):
                index.add_with_ids(np.ascontiguousarray(vectors[start: start + 65_536], dtype=np.float32),
                                   ids[start: start + 65_536])
            self._index, self._store, self.plan = index, None, plan
            self._search_index = None
            return
        nlist = min(plan.nlist, max(1, n // 39))  # k-means wants >= 39 points a list
        plan = plan.replace(nlist=nlist, nprobe=min(plan.nprobe, nlist))
        index = _build_faiss(plan, self.dim)
        rng = np.random.default_rng(seed)
        train_n = min(n, max(plan.train_size, nlist * 39))
        sample = np.sort(rng.choice(n, train_n, replace=False)) if train_n < n else np.arange(n)
        train = np.ascontiguousarray(vectors[sample], dtype=np.float32)
        index.train(train)
        del train
        full = np.empty((n, self.dim), dtype=np.float32)  # the store's copy, filled as the index is
        for start in range(0, n, 65_536):
            chunk = np.ascontiguousarray(vectors[start: start + 65_536], dtype=np.float32)
            index.add_with_ids(chunk, ids[start: start + 65_536])
            full[start: start + len(chunk)] = chunk
        if len(np.unique(ids)) != n:
            raise ValueError("rebuild: ids must be unique")
        store = _VectorStore(self.dim, full, ids)
        self._index, self._store, self.plan = index, store, plan
        self._trained_n = n
        self._search_index = None

    # ------------------------------------------------------------------ searching

    def _searcher(self) -> faiss.Index:
        if self._search_index is None:
            self._search_index = self._index
            if self._use_gpu:  # same results as the CPU index, faster on large collections
                try:
                    resources = faiss.StandardGpuResources()
                    gpu = faiss.index_cpu_to_gpu(resources, 0, self._index)
                    if self.plan.approximate:
                        faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", self.plan.nprobe)
                    self._search_index = gpu
                except (RuntimeError, AttributeError):  # index type without a GPU version
                    self._search_index = self._index
        return self._search_index

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for each query row; ids are -1 where fewer than k exist.

        allowed_ids restricts the search itself (not a post-filter), so k hits come back
        whenever k allowed vectors exist. With an approximate plan the candidates are re-scored
        exactly, so scores are exact inner products.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        nq = queries.shape[0]
        if len(self) == 0:
            return np.zeros((nq, 0), dtype=np.float32), np.zeros((nq, 0), dtype=np.int64)
        k = max(1, min(k, len(self)))
        allowed = None
        if allowed_ids is not None:
            allowed = np.ascontiguousarray(allowed_ids, dtype=np.int64)
            if len(allowed) == 0:
                return np.zeros((nq, 0), dtype=np.float32), np.zeros((nq, 0), dtype=np.int64)
        before = faiss.omp_get_max_threads()
        threads = self.plan.query_threads if nq == 1 and self.plan.query_threads > 0 else before
        if threads != before:
            faiss.omp_set_num_threads(threads)
        try:
            if not self.plan.approximate:
                if allowed is not None:
                    params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
                    return self._index.search(queries, min(k, len(allowed)), params=params)
                return self._searcher().search(queries, k)
            return self._search_approximate(queries, k, allowed)
        finally:
            if threads != before:
                faiss.omp_set_num_threads(before)

    def _search_approximate(self, queries: np.ndarray, k: int, allowed: np.ndarray | None):
        nq = queries.shape[0]
        plan = self.plan
        if allowed is not None:
            allowed = np.unique(allowed)
            allowed = allowed[self._store.rows_of(allowed) >= 0] if self.vector_source is None else allowed
            if len(allowed) == 0:
                return np.zeros((nq, 0), dtype=np.float32), np.zeros((nq, 0), dtype=np.int64)
            k = min(k, len(allowed))
            if len(allowed) <= EXACT_FILTER_MAX:
                return self._exact_over(queries, k, allowed)
        kk = min(len(self), k * max(1, plan.oversample))
        if allowed is None:
            searcher = self._searcher()
            if searcher is self._index:
                params = faiss.SearchParametersIVF(nprobe=plan.nprobe)
                _, cand = searcher.search(queries, kk, params=params)
            else:
                _, cand = searcher.search(queries, kk)
        else:
            # a selective filter empties most lists: probe proportionally more of them
            frac = len(allowed) / max(1, len(self))
            nprobe = min(plan.nlist, int(math.ceil(plan.nprobe / max(frac, 1e-9))))
            params = faiss.SearchParametersIVF(nprobe=nprobe, sel=faiss.IDSelectorBatch(allowed))
            _, cand = self._index.search(queries, kk, params=params)
        scores, ids = self._rescore(queries, cand, k)
        if allowed is not None:
            short = np.nonzero((ids < 0).any(axis=1))[0]
            if len(short):  # the probed lists held fewer than k allowed vectors: answer exactly
                s2, i2 = self._exact_over(queries[short], k, allowed)
                scores[short], ids[short] = s2, i2
        return scores, ids

    def _full_vectors(self, ids: np.ndarray) -> np.ndarray:
        if self.vector_source is not None:
            return np.asarray(self.vector_source(ids), dtype=np.float32).reshape(len(ids), self.dim)
        return self._store.gather(self._store.rows_of(ids))

    def _rescore(self, queries: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products of each query with its candidates; top-k of them."""
        nq, kk = cand.shape
        valid = cand >= 0
        flat_ids = cand[valid]
        vecs = self._full_vectors(flat_ids)
        scores = np.full((nq, kk), -np.inf, dtype=np.float32)
        qrow = np.nonzero(valid)[0]
        scores[valid] = np.einsum("ij,ij->i", vecs, queries[qrow])
        if kk > k:
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(kk), (nq, kk))
        top_s = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        out_s = np.take_along_axis(scores, top, axis=1)
        out_i = np.take_along_axis(cand, top, axis=1)
        missing = ~np.isfinite(out_s)
        out_i[missing] = -1
        out_s[missing] = 0.0
        pad = k - out_i.shape[1]
        if pad > 0:
            out_i = np.pad(out_i, ((0, 0), (0, pad)), constant_values=-1)
            out_s = np.pad(out_s, ((0, 0), (0, pad)))
        return out_s.astype(np.float32), out_i.astype(np.int64)

    def _exact_over(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the allowed ids only (full vectors, in blocks)."""
        nq = queries.shape[0]
        best_s = np.full((nq, k), -np.inf, dtype=np.float32)
        best_i = np.full((nq, k), -1, dtype=np.int64)
        for start in range(0, len(allowed), 65_536):
            block_ids = allowed[start: start + 65_536]
            s = queries @ self._full_vectors(block_ids).T
            s_all = np.concatenate([best_s, s], axis=1)
            i_all = np.concatenate([best_i, np.broadcast_to(block_ids, s.shape)], axis=1)
            top = np.argpartition(-s_all, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(s_all, top, axis=1), np.take_along_axis(i_all, top, axis=1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        best_s, best_i = np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)
        best_i[~np.isfinite(best_s)] = -1
        return best_s.astype(np.float32), best_i

    # ------------------------------------------------------------------ memory accounting

    def resident_bytes(self) -> int:
        """Bytes this index keeps in RAM: the FAISS index plus, for approximate plans, the id
        mapping and any full vectors held in RAM (memory-mapped vectors are not counted)."""
        if not self.plan.approximate:
            return len(self) * (4 * self.dim + 8)  # float32 vectors + int64 ids (IDMap2's hash map not counted)
        return _ivf_bytes(self._index) + self._store.resident_bytes()

    def resident_note(self) -> str:
        if not self.plan.approximate:
            return "flat index: float32 vectors + int64 ids (id hash map not counted)"
        parts = "IVF codes + ids + coarse centroids + codebooks, plus the id->row mapping (2 x int64)"
        if isinstance(self._store.base, np.memmap):
            return parts + "; the full float32 vectors are memory-mapped from disk and NOT counted"
        return parts + "; plus the full float32 vectors held in RAM for re-scoring"

    # ------------------------------------------------------------------ persistence

    def save(self, path: Path, generation: int) -> None:
        """Write the index and the generation it reflects; a crash leaves the old or the new file.

        Approximate plans also write the full vectors (``<path>.<token>.f32``, float32 rows in id
        order) and their ids (``<path>.<token>.ids``) beside the index; the stamp names the token,
        so the files of one save are only ever read together.
        """
        path = Path(path)
        index_bytes = faiss.serialize_index(self._index)
        stamp = {"generation": generation, "count": len(self), "plan": self.plan.to_json(),
                 "index_bytes": int(index_bytes.nbytes)}
        old_tokens: list[str] = []
        if self.plan.approximate:
            store = self._store
            reuse = (not store.dirty and store.file is not None and store.file.exists()
                     and store.file.parent == path.parent and store.file.name.startswith(path.name + "."))
            if reuse:
                token = store.file.name[len(path.name) + 1: -len(".f32")]
            else:
                token = uuid.uuid4().hex[:12]
                ids_all = np.concatenate([ids for ids, _ in store.live()]) if len(store) else np.zeros(0, np.int64)
                _atomic_write_chunks(_side(path, token, ".f32"), (v.tobytes() for _, v in store.live()))
                _atomic_write(_side(path, token, ".ids"), ids_all.astype("<i8").tobytes())
            stamp["token"] = token
            old_tokens = [p for p in path.parent.glob(path.name + ".*.f32") if p.name != _side(path, token, ".f32").name]
        _atomic_write(path, index_bytes.tobytes())
        _atomic_write(path.with_suffix(path.suffix + ".json"), json.dumps(stamp).encode())
        if self.plan.approximate and not reuse:
            f32 = _side(path, token, ".f32")
            if (self.lean or self.plan.lean) and len(ids_all):  # from now on the full vectors live in the mapped file only
                mapped = np.memmap(f32, dtype=np.float32, mode="r", shape=(len(ids_all), self.dim))
                self._store = _VectorStore(self.dim, mapped, ids_all)
            self._store.file, self._store.dirty = f32, False  # unchanged: the next save reuses the file
        for old in old_tokens:  # files of earlier saves (a process that mapped them keeps its mapping)
            for f in (old, old.with_suffix(".ids")):
                try:
                    f.unlink()
                except OSError:
                    pass

    @classmethod
    def load(cls, path: Path, dim: int, **options) -> tuple[VectorIndex, int] | None:
        """The saved index and its generation, or None when missing or unreadable.

        options go to the constructor (use_gpu, lean, auto_optimize, vector_source). The full
        vectors of an approximate index are memory-mapped in lean mode, read into RAM otherwise.
        """
        path = Path(path)
        try:
            stamp = json.loads(path.with_suffix(path.suffix + ".json").read_text())
            raw = np.fromfile(path, dtype=np.uint8)
            if "index_bytes" in stamp and raw.nbytes != stamp["index_bytes"]:
                return None
            index = faiss.deserialize_index(raw)
            plan = IndexPlan.from_json(stamp["plan"]) if "plan" in stamp else IndexPlan("flat")
            store = None
            if plan.approximate:
                f32 = _side(path, stamp["token"], ".f32")
                ids = np.fromfile(_side(path, stamp["token"], ".ids"), dtype="<i8").astype(np.int64)
                if f32.stat().st_size != len(ids) * dim * 4:
                    return None
                lean = options.get("lean", False) or plan.lean
                if len(ids) == 0:
                    base = np.zeros((0, dim), dtype=np.float32)
                elif lean:
                    base = np.memmap(f32, dtype=np.float32, mode="r", shape=(len(ids), dim))
                else:
                    base = np.fromfile(f32, dtype=np.float32).reshape(len(ids), dim)
                store = _VectorStore(dim, base, ids)
                store.dirty = False
                store.file = f32
        except (OSError, ValueError, RuntimeError, KeyError, TypeError):
            return None
        if index.d != dim or index.ntotal != stamp.get("count") or (store is not None and len(store) != index.ntotal):
            return None
        if plan.approximate:
            obj = cls(dim, index, plan=plan, **options)
            obj._store = store
            obj._trained_n = int(index.ntotal)
        else:
            obj = cls(dim, index, plan=plan, **options)
        return obj, int(stamp["generation"])


def _ivf_bytes(index: faiss.Index) -> int:
    """RAM held by an IVF index: list codes + ids, coarse centroids, codebooks (from the serialized
    form, which is a byte-for-byte image of those arrays)."""
    return int(faiss.serialize_index(index).nbytes)


def _side(path: Path, token: str, suffix: str) -> Path:
    return path.with_name(f"{path.name}.{token}{suffix}")


def _atomic_write(path: Path, data: bytes) -> None:
    _atomic_write_chunks(path, [data])


def _atomic_write_chunks(path: Path, chunks) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for data in chunks:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

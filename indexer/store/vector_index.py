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

One index is safe to share between threads: searches read it together, a change (add, remove,
`apply`, a rebuild) waits for them and runs alone (indexer.store.read_write_lock), so a reader
catches up in place instead of copying the index per change.
"""

from __future__ import annotations

import copy as _copy
import math
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from xmodal.indexer.store import plan as _plan
from xmodal.indexer.store import saved_index
from xmodal.indexer.store.full_vectors import FullVectors
from xmodal.indexer.store.plan import (
    EXACT_FILTER_MAX,
    FLAT_MAX_ELEMENTS,
    MIN_TRAIN_VECTORS,
    IndexPlan,
    build_faiss,
    choose_plan,
    gpu_available,
)
from xmodal.indexer.store.read_write_lock import ReadWriteLock

# The plan's names stay importable from here, where the index's users look for them.
__all__ = ["IndexPlan", "VectorIndex", "choose_plan", "gpu_available", "FLAT_MAX_ELEMENTS"]


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
        self._index: faiss.Index = index
        self._store: FullVectors | None = FullVectors(dim) if self.plan.approximate else None
        self.lean = lean or self.plan.lean
        self.auto_optimize = auto_optimize
        self.vector_source = vector_source
        self._use_gpu = gpu_available() if use_gpu is None else use_gpu
        self._search_index: faiss.Index | None = None  # GPU copy, made lazily
        self._trained_n = 0
        self._guard = ReadWriteLock()  # searches share it; changes take it alone

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def _approx(self) -> FullVectors:
        """The full vectors an approximate plan re-scores with (an exact plan keeps them in FAISS)."""
        if self._store is None:
            raise RuntimeError("an exact (flat) index has no separate vector store")
        return self._store

    def copy(self) -> VectorIndex:
        """An independent copy, to change while searches may still read this one."""
        with self._guard.reading():
            return self._copy()

    def _copy(self) -> VectorIndex:
        clone = _copy.copy(self)
        clone._guard = ReadWriteLock()
        try:
            clone._index = faiss.clone_index(self._index)
        except RuntimeError:  # an index type clone_index does not know: through its bytes
            clone._index = faiss.deserialize_index(faiss.serialize_index(self._index))
        if self._store is not None:
            clone._store = self._store.copy()
        clone._search_index = None
        return clone

    # ------------------------------------------------------------------ building

    def apply(self, ids: np.ndarray, vectors: np.ndarray, deleted: np.ndarray) -> None:
        """One change as a whole: `deleted` go, (ids, vectors) come in (or replace); a search
        sees the index before or after it, never in between."""
        with self._guard.writing():
            self.remove(deleted)
            self.add(ids, vectors)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        with self._guard.writing():
            self._add(ids, vectors)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vector dimension {vectors.shape[-1]} does not match the index's {self.dim}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.plan.approximate:
            # upsert: an id is stored once, so its old codes go before the new ones come in
            present = ids[self._approx.rows_of(ids) >= 0]
            if len(present):
                self._index.remove_ids(faiss.IDSelectorBatch(present))
            self._approx.add(ids, vectors)
        elif len(self):
            present = np.isin(ids, faiss.vector_to_array(self._index.id_map))  # type: ignore[attr-defined]
            if present.any():
                self._index.remove_ids(faiss.IDSelectorBatch(ids[present]))
        self._index.add_with_ids(vectors, ids)
        self._search_index = None
        if self.auto_optimize and self.needs_optimize():
            self.optimize()

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        with self._guard.writing():
            self._remove(ids)

    def _remove(self, ids: np.ndarray) -> None:
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
            return want.approximate and n * self.dim > 1.25 * _plan.FLAT_MAX_ELEMENTS
        if not want.approximate:
            return n * self.dim < 0.5 * _plan.FLAT_MAX_ELEMENTS
        return n > 4 * max(1, self._trained_n)  # lists grew long: retrain with more of them

    def optimize(self, plan: IndexPlan | None = None) -> None:
        """Rebuild with the plan for the current size (`xmodal optimize`)."""
        with self._guard.writing():
            ids, vectors = self.vectors()
            self.rebuild(vectors, ids, plan if plan is not None else self._wanted_plan)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All stored (ids, vectors)."""
        with self._guard.reading():
            return self._all_vectors()

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.plan.approximate:
            flat = faiss.downcast_index(self._index.index)  # type: ignore[attr-defined]
            n = int(flat.ntotal)
            xb = flat.get_xb()  # type: ignore[attr-defined]
            vecs = faiss.rev_swig_ptr(xb, n * self.dim).reshape(n, self.dim).copy()
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)  # type: ignore[attr-defined]
            return ids, vecs
        parts = list(self._approx.live())
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def rebuild(self, vectors: np.ndarray, ids: np.ndarray, plan: IndexPlan | None = None, seed: int = 1234) -> None:
        """Replace the contents with (ids, vectors), training the plan's index (default: chosen by size).

        vectors may be a memory-mapped array; it is read in chunks.
        """
        with self._guard.writing():
            self._rebuild(vectors, ids, plan, seed)

    def _rebuild(self, vectors: np.ndarray, ids: np.ndarray, plan: IndexPlan | None, seed: int) -> None:
        n = len(ids)
        plan = plan if plan is not None else choose_plan(n, self.dim, self.lean, self._use_gpu)
        if plan.approximate and n < MIN_TRAIN_VECTORS:  # too few to train on: stay exact for now
            self._wanted_plan, plan = plan, IndexPlan("flat")
        else:
            self._wanted_plan = None
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        index: faiss.Index
        if not plan.approximate:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            for start in range(0, n, 65_536):
                index.add_with_ids(
                    np.ascontiguousarray(vectors[start : start + 65_536], dtype=np.float32), ids[start : start + 65_536]
                )
            self._index, self._store, self.plan = index, None, plan
            self._search_index = None
            return
        nlist = min(plan.nlist, max(1, n // 39))  # k-means wants >= 39 points a list
        plan = plan.replace(nlist=nlist, nprobe=min(plan.nprobe, nlist))
        index = build_faiss(plan, self.dim)
        rng = np.random.default_rng(seed)
        train_n = min(n, max(plan.train_size, nlist * 39))
        sample = np.sort(rng.choice(n, train_n, replace=False)) if train_n < n else np.arange(n)
        train = np.ascontiguousarray(vectors[sample], dtype=np.float32)
        index.train(train)
        del train
        full = np.empty((n, self.dim), dtype=np.float32)  # the store's copy, filled as the index is
        for start in range(0, n, 65_536):
            chunk = np.ascontiguousarray(vectors[start : start + 65_536], dtype=np.float32)
            index.add_with_ids(chunk, ids[start : start + 65_536])
            full[start : start + len(chunk)] = chunk
        if len(np.unique(ids)) != n:
            raise ValueError("rebuild: ids must be unique")
        store = FullVectors(self.dim, full, ids)
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
        with self._guard.reading():
            return self._search(queries, k, allowed_ids)

    def _search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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
                    params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))  # type: ignore[call-arg]
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
            allowed = allowed[self._approx.rows_of(allowed) >= 0] if self.vector_source is None else allowed
            if len(allowed) == 0:
                return np.zeros((nq, 0), dtype=np.float32), np.zeros((nq, 0), dtype=np.int64)
            k = min(k, len(allowed))
            if len(allowed) <= EXACT_FILTER_MAX:
                return self._exact_over(queries, k, allowed)
        kk = min(len(self), k * max(1, plan.oversample))
        if allowed is None:
            searcher = self._searcher()
            if searcher is self._index:
                params = faiss.SearchParametersIVF(nprobe=plan.nprobe)  # type: ignore[call-arg]
                _, cand = searcher.search(queries, kk, params=params)
            else:
                _, cand = searcher.search(queries, kk)
        else:
            # a selective filter empties most lists: probe proportionally more of them
            frac = len(allowed) / max(1, len(self))
            nprobe = min(plan.nlist, int(math.ceil(plan.nprobe / max(frac, 1e-9))))
            params = faiss.SearchParametersIVF(nprobe=nprobe, sel=faiss.IDSelectorBatch(allowed))  # type: ignore[call-arg]
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
        return self._approx.gather(self._approx.rows_of(ids))

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
            block_ids = allowed[start : start + 65_536]
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
        return _ivf_bytes(self._index) + self._approx.resident_bytes()

    def resident_note(self) -> str:
        if not self.plan.approximate:
            return "flat index: float32 vectors + int64 ids (id hash map not counted)"
        parts = "IVF codes + ids + coarse centroids + codebooks, plus the id->row mapping (2 x int64)"
        if isinstance(self._approx.base, np.memmap):
            return parts + "; the full float32 vectors are memory-mapped from disk and NOT counted"
        return parts + "; plus the full float32 vectors held in RAM for re-scoring"

    # ------------------------------------------------------------------ persistence (indexer.store.saved_index)

    def save(self, path: Path, generation: int, origin: str | None = None) -> None:
        """Write the index and the generation it reflects; a crash leaves the old or the new file.

        origin names the database the generation counts in (a cache of another database is
        never taken for current). Approximate plans also write their full vectors beside it.
        """
        with self._guard.writing():
            mapped = saved_index.write(Path(path), self._index, self.plan, self._store, generation, origin, self.lean)
            if mapped is not None:  # lean: from now on the full vectors live in the mapped file only
                self._store = mapped

    @staticmethod
    def read_stamp(path: Path) -> dict | None:
        """The saved index's stamp (generation, origin, count, plan), or None when unreadable."""
        return saved_index.read_stamp(Path(path))

    @classmethod
    def load(cls, path: Path, dim: int, **options) -> tuple[VectorIndex, int] | None:
        """The saved index and its generation, or None when missing or unreadable.

        options go to the constructor (use_gpu, lean, auto_optimize, vector_source). The full
        vectors of an approximate index are memory-mapped in lean mode, read into RAM otherwise.
        """
        saved = saved_index.read(Path(path), dim, lean=bool(options.get("lean", False)))
        if saved is None:
            return None
        full = saved.full if saved.plan.approximate else None
        return cls.from_trained(dim, saved.index, saved.plan, full, **options), saved.generation

    @classmethod
    def from_trained(
        cls, dim: int, index: faiss.Index, plan: IndexPlan, full: FullVectors | None, **options
    ) -> VectorIndex:
        """An index over a FAISS index already trained and filled (a saved one, a bounded build):
        full holds the vectors an approximate plan re-scores with (None for an exact plan).
        options go to the constructor (use_gpu, lean, auto_optimize, vector_source)."""
        obj = cls(dim, index, plan=plan, **options)
        if plan.approximate:
            obj._store = full
            obj._trained_n = int(index.ntotal)
        return obj


def _ivf_bytes(index: faiss.Index) -> int:
    """RAM held by an IVF index: list codes + ids, coarse centroids, codebooks (from the serialized
    form, which is a byte-for-byte image of those arrays)."""
    return int(faiss.serialize_index(index).nbytes)

"""Vectors in FAISS, with ids equal to the SQL row ids, saved atomically beside the database.

The file is a cache of the vectors kept in SQL: each save records the SQL generation it reflects,
and an index whose generation differs is rebuilt from SQL on open (see indexer.index_store).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import faiss
import numpy as np

__all__ = ["VectorIndex", "gpu_available"]


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and a CUDA GPU is visible."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndex:
    """Inner-product search over unit vectors keyed by int64 ids."""

    def __init__(self, dim: int, index: faiss.Index | None = None, use_gpu: bool | None = None) -> None:
        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._use_gpu = gpu_available() if use_gpu is None else use_gpu
        self._search_index: faiss.Index | None = None  # GPU copy, made lazily

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vector dimension {vectors.shape[1]} does not match the index's {self.dim}")
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        self._search_index = None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self._index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
        self._search_index = None

    def _searcher(self) -> faiss.Index:
        if self._search_index is None:
            self._search_index = self._index
            if self._use_gpu:  # same results as the CPU index, faster on large collections
                resources = faiss.StandardGpuResources()
                self._search_index = faiss.index_cpu_to_gpu(resources, 0, self._index)
        return self._search_index

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for each query row; ids are -1 where fewer than k exist.

        allowed_ids restricts the search itself (not a post-filter), so k hits come back
        whenever k allowed vectors exist.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, len(self))) if len(self) else 1
        if len(self) == 0:
            n = queries.shape[0]
            return np.zeros((n, 0), dtype=np.float32), np.zeros((n, 0), dtype=np.int64)
        if allowed_ids is not None:
            allowed = np.ascontiguousarray(allowed_ids, dtype=np.int64)
            if len(allowed) == 0:
                n = queries.shape[0]
                return np.zeros((n, 0), dtype=np.float32), np.zeros((n, 0), dtype=np.int64)
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            scores, ids = self._index.search(queries, min(k, len(allowed)), params=params)
        else:
            scores, ids = self._searcher().search(queries, k)
        return scores, ids

    def save(self, path: Path, generation: int) -> None:
        """Write the index and the generation it reflects; a crash leaves the old or the new file."""
        path = Path(path)
        _atomic_write(path, faiss.serialize_index(self._index).tobytes())
        _atomic_write(path.with_suffix(path.suffix + ".json"), json.dumps({"generation": generation, "count": len(self)}).encode())

    @classmethod
    def load(cls, path: Path, dim: int) -> tuple[VectorIndex, int] | None:
        """The saved index and its generation, or None when missing or unreadable."""
        path = Path(path)
        try:
            stamp = json.loads(path.with_suffix(path.suffix + ".json").read_text())
            index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
        except (OSError, ValueError, RuntimeError):
            return None
        if index.d != dim or index.ntotal != stamp.get("count"):
            return None
        return cls(dim, index), int(stamp["generation"])


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
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

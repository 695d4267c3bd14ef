"""Full-precision vectors by id, kept beside an approximate FAISS index for exact re-scoring."""

from __future__ import annotations

import copy as _copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["FullVectors"]


class FullVectors:
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

    def copy(self) -> FullVectors:
        """An independent copy: the base is only ever read, the tail is written in place."""
        clone = _copy.copy(self)
        clone.tail = self.tail.copy()
        return clone

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
        self.tail[self.tail_len : self.tail_len + m] = vectors
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

    def live(self, chunk: int = 65_536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of the live rows in id order, in chunks."""
        for start in range(0, len(self.sorted_ids), chunk):
            ids = self.sorted_ids[start : start + chunk]
            yield ids, self.gather(self.sorted_rows[start : start + chunk])

    def resident_bytes(self) -> int:
        mapping = self.sorted_ids.nbytes + self.sorted_rows.nbytes
        vectors = 0 if isinstance(self.base, np.memmap) else self.base.nbytes
        return mapping + vectors + self.tail.nbytes

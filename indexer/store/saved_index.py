"""How a vector index lives on disk: the FAISS file, its stamp, and the full vectors beside it.

``<name>``            the serialized FAISS index;
``<name>.json``       its stamp: the SQL generation it reflects (and the database it counts in), the
                      row count, the plan, the FAISS file's size, and for approximate plans a token;
``<name>.<token>.f32`` and ``.ids``  the full float32 vectors (rows in id order) and their ids, which
                      an approximate plan re-scores with. The stamp names the token, so the files of
                      one save are only ever read together; a crash leaves the old or the new set.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from xmodal.indexer.store.full_vectors import FullVectors
from xmodal.indexer.store.plan import IndexPlan

__all__ = ["SavedIndex", "read", "read_stamp", "write"]


@dataclass
class SavedIndex:
    index: faiss.Index
    plan: IndexPlan
    full: FullVectors | None  # approximate plans only
    generation: int


def write(
    path: Path,
    index: faiss.Index,
    plan: IndexPlan,
    full: FullVectors | None,
    generation: int,
    origin: str | None,
    lean: bool,
) -> FullVectors | None:
    """Save `index` (and `full`, for approximate plans). Returns the memory-mapped vectors that
    should replace `full` in lean mode when they were written anew, else None."""
    index_bytes = faiss.serialize_index(index)
    stamp: dict = {
        "generation": generation,
        "count": int(index.ntotal),
        "plan": plan.to_json(),
        "index_bytes": int(index_bytes.nbytes),
    }
    if origin:
        stamp["origin"] = origin
    old_tokens: list[Path] = []
    written: tuple[Path, np.ndarray] | None = None
    if plan.approximate:
        if full is None:
            raise RuntimeError("an approximate index has no full vectors to save")
        file = full.file
        reuse = (
            not full.dirty
            and file is not None
            and file.exists()
            and file.parent == path.parent
            and file.name.startswith(path.name + ".")
        )
        if reuse and file is not None:
            token = file.name[len(path.name) + 1 : -len(".f32")]
        else:
            token = uuid.uuid4().hex[:12]
            ids_all = np.concatenate([ids for ids, _ in full.live()]) if len(full) else np.zeros(0, np.int64)
            _atomic_write_chunks(_side(path, token, ".f32"), (v.tobytes() for _, v in full.live()))
            _atomic_write(_side(path, token, ".ids"), ids_all.astype("<i8").tobytes())
            written = (_side(path, token, ".f32"), ids_all)
        stamp["token"] = token
        old_tokens = [p for p in path.parent.glob(path.name + ".*.f32") if p.name != _side(path, token, ".f32").name]
    _atomic_write(path, index_bytes.tobytes())
    _atomic_write(path.with_suffix(path.suffix + ".json"), json.dumps(stamp).encode())
    mapped = None
    if written is not None and full is not None:
        f32, ids_all = written
        if (lean or plan.lean) and len(ids_all):
            memmap = np.memmap(f32, dtype=np.float32, mode="r", shape=(len(ids_all), full.dim))
            mapped = full = FullVectors(full.dim, memmap, ids_all)
        full.file, full.dirty = f32, False  # unchanged: the next save reuses the file
    for old in old_tokens:  # files of earlier saves (a process that mapped them keeps its mapping)
        # .ivfdata: on-disk inverted lists (bounded_build)
        for f in (old, old.with_suffix(".ids"), old.with_suffix(".ivfdata")):
            try:
                f.unlink()
            except OSError:
                pass
    return mapped


def read_stamp(path: Path) -> dict | None:
    """The saved index's stamp (generation, origin, count, plan), or None when unreadable."""
    try:
        stamp = json.loads(path.with_suffix(path.suffix + ".json").read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def read(path: Path, dim: int, lean: bool = False) -> SavedIndex | None:
    """The saved index, or None when missing, unreadable or inconsistent. The full vectors of an
    approximate plan are memory-mapped in lean mode, read into RAM otherwise."""
    try:
        stamp = json.loads(path.with_suffix(path.suffix + ".json").read_text())
        raw = np.fromfile(path, dtype=np.uint8)
        if "index_bytes" in stamp and raw.nbytes != stamp["index_bytes"]:
            return None
        index = faiss.deserialize_index(raw)
        plan = IndexPlan.from_json(stamp["plan"]) if "plan" in stamp else IndexPlan("flat")
        full = None
        if plan.approximate:
            f32 = _side(path, stamp["token"], ".f32")
            ids = np.fromfile(_side(path, stamp["token"], ".ids"), dtype="<i8").astype(np.int64)
            if f32.stat().st_size != len(ids) * dim * 4:
                return None
            if len(ids) == 0:
                base = np.zeros((0, dim), dtype=np.float32)
            elif lean or plan.lean:
                base = np.memmap(f32, dtype=np.float32, mode="r", shape=(len(ids), dim))
            else:
                base = np.fromfile(f32, dtype=np.float32).reshape(len(ids), dim)
            full = FullVectors(dim, base, ids)
            full.dirty = False
            full.file = f32
        generation = int(stamp["generation"])
    except (OSError, ValueError, RuntimeError, KeyError, TypeError):
        return None
    if index.d != dim or index.ntotal != stamp.get("count") or (full is not None and len(full) != index.ntotal):
        return None
    return SavedIndex(index, plan, full, generation)


def _side(path: Path, token: str, suffix: str) -> Path:
    return path.with_name(f"{path.name}.{token}{suffix}")


def _atomic_write(path: Path, data: bytes) -> None:
    _atomic_write_chunks(path, [data])


def _atomic_write_chunks(path: Path, chunks: Iterable[bytes]) -> None:
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

"""Building the FAISS cache from SQL when the vectors do not fit in memory.

The in-memory rebuild reads every vector at once (n x dim x 4 bytes: 7.7 GB at 5M x 384). This
build streams them from SQL in chunks, twice, and keeps peak memory near a budget instead:

1. a seeded Bernoulli sample of the vectors (at most a quarter of the budget) trains the coarse
   quantizer and the PQ codebooks;
2. the vectors are read again chunk by chunk: each chunk is encoded into the trained index and
   appended to the float32 side file (``<faiss>.<token>.f32``, memory-mapped later for exact
   re-scoring), so full vectors never sit in RAM together;
3. when the codes alone would not fit in half the budget, each chunk is encoded into its own
   shard file and the shards are merged into on-disk inverted lists (``<faiss>.<token>.ivfdata``)
   with FAISS's ``contrib.ondisk.merge_ondisk``; searches then read lists through mmap.

The result is an ordinary `VectorIndex` in lean mode, saved by the usual `VectorIndex.save`.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import func, select

from xmodal.indexer.store.full_vectors import FullVectors
from xmodal.indexer.store.plan import IndexPlan, build_faiss, choose_plan, divisor_at_most
from xmodal.indexer.store.schema import MetadataStore, VectorTable
from xmodal.indexer.store.vector_index import VectorIndex

__all__ = ["BuildReport", "parse_bytes", "iter_vectors", "build_bounded", "estimated_peak_bytes", "DEFAULT_BUDGET"]

DEFAULT_BUDGET = 2 * 1024**3
_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "T": 1024**4,
    "TB": 1024**4,
}


def parse_bytes(text: str) -> int:
    """'2GB', '512M', '1.5 GiB', '1000000' -> bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*", text.upper())
    if not match:
        raise ValueError(f"not a size: '{text}' (use e.g. 2GB, 512MB)")
    unit = match.group(2) + ("B" if match.group(2) else "")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass
class BuildReport:
    vectors: int = 0
    plan: str = ""
    on_disk: bool = False
    train_vectors: int = 0
    chunks: int = 0


def iter_vectors(
    metadata: MetadataStore, table: VectorTable, chunk: int = 65_536
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, float32 vectors) of every row in id order, `chunk` rows at a time (a server-side
    cursor on PostgreSQL, a stepped statement on SQLite): memory stays at one chunk."""
    with metadata.session() as s:
        result = s.execute(
            select(table.id, table.vector).order_by(table.id).execution_options(yield_per=chunk, stream_results=True)
        )
        for part in result.partitions(chunk):
            ids = np.fromiter((row[0] for row in part), dtype=np.int64, count=len(part))
            raw = b"".join(row[1] for row in part)
            yield ids, np.frombuffer(raw, dtype="<f4").reshape(len(part), -1).astype(np.float32, copy=False)


def _bounded_plan(n: int, dim: int, budget: int) -> tuple[IndexPlan, bool]:
    """The lean plan for n vectors, and whether its inverted lists must live on disk."""
    plan = choose_plan(n, dim, lean=True)
    if not plan.approximate:
        return plan, False
    code_bytes = plan.pq_m // 2 if plan.kind == "ivf_pqfs" else plan.pq_m
    resident = n * (code_bytes + 8 + 16)  # codes + ids in the lists + the id->row mapping
    if resident <= budget // 2:
        return plan, False
    return _on_disk_plan(plan, dim), True


def _on_disk_plan(plan: IndexPlan, dim: int) -> IndexPlan:
    # fast-scan lists are packed in blocks that cannot be memory-mapped: 8-bit PQ goes on disk
    return plan.replace(kind="ivf_pq", pq_m=divisor_at_most(dim, max(8, dim // 8)))


def build_bounded(
    metadata: MetadataStore,
    table: VectorTable,
    dim: int,
    faiss_path: Path,
    budget: int = DEFAULT_BUDGET,
    plan: IndexPlan | None = None,
    on_disk: bool | None = None,
    seed: int = 1234,
) -> tuple[VectorIndex, BuildReport]:
    """Build the cache of one table within about `budget` bytes of RAM; side files go beside
    faiss_path. `plan`/`on_disk` override the choice by size (tests force the on-disk path)."""
    with metadata.session() as s:
        n = int(s.scalar(select(func.count()).select_from(table)) or 0)
    chosen, disk = _bounded_plan(n, dim, budget)
    plan = plan or chosen
    disk = disk if on_disk is None else on_disk
    if disk and plan.kind == "ivf_pqfs":
        plan = _on_disk_plan(plan, dim)
    chunk = max(1024, min(65_536, budget // (16 * dim * 4)))  # a chunk (and its SQL blobs) stays small
    report = BuildReport(vectors=n, on_disk=disk)
    if not plan.approximate or n < 4 * plan.nlist:
        # small enough for an exact index in RAM: the usual path, fed chunk by chunk
        exact = VectorIndex(dim, auto_optimize=False)
        for ids, vecs in iter_vectors(metadata, table, chunk):
            exact.add(ids, vecs)
            report.chunks += 1
        exact.auto_optimize = True
        report.plan = exact.plan.describe()
        return exact, report

    # 1. the training sample, drawn while streaming (seeded: the same store gives the same index)
    rng = np.random.default_rng(seed)
    train_cap = max(plan.nlist * 39, min(plan.train_size, budget // (4 * dim * 4)))
    keep = min(1.0, train_cap / n)
    sample_parts = []
    for _, vecs in iter_vectors(metadata, table, chunk):
        mask = rng.random(len(vecs)) < keep
        sample_parts.append(vecs[mask].copy())
    train = np.concatenate(sample_parts) if sample_parts else np.zeros((0, dim), np.float32)
    del sample_parts
    nlist = min(plan.nlist, max(1, len(train) // 39))
    plan = plan.replace(nlist=nlist, nprobe=min(plan.nprobe, nlist), lean=True)
    trained = build_faiss(plan, dim)
    trained.train(train)
    report.train_vectors = len(train)
    del train

    # 2. stream again: encode, and write the full vectors to the side file
    token = uuid.uuid4().hex[:12]
    f32 = faiss_path.with_name(f"{faiss_path.name}.{token}.f32")
    ids_file = faiss_path.with_name(f"{faiss_path.name}.{token}.ids")
    shard_dir = Path(tempfile.mkdtemp(prefix=".build-", dir=faiss_path.parent)) if disk else None
    shards: list[str] = []
    all_ids = np.empty(n, dtype=np.int64)  # 8 bytes a vector: the id->row mapping needs them anyway
    count = 0
    index: faiss.Index = trained  # in RAM: the trained index itself takes the codes
    try:
        with open(f32, "wb") as out:
            for ids, vecs in iter_vectors(metadata, table, chunk):
                if shard_dir is not None:
                    part = faiss.clone_index(trained)
                    part.add_with_ids(vecs, ids)
                    shard = str(shard_dir / f"shard{len(shards):05d}.index")
                    faiss.write_index(part, shard)
                    shards.append(shard)
                    del part
                else:
                    index.add_with_ids(vecs, ids)
                out.write(np.ascontiguousarray(vecs, dtype="<f4").tobytes())
                all_ids[count : count + len(ids)] = ids
                count += len(ids)
                report.chunks += 1
            out.flush()
            os.fsync(out.fileno())
        all_ids = all_ids[:count]
        np.ascontiguousarray(all_ids, dtype="<i8").tofile(ids_file)
        if disk:
            from faiss.contrib.ondisk import merge_ondisk

            index = faiss.clone_index(trained)
            merge_ondisk(index, shards, str(faiss_path.with_name(f"{faiss_path.name}.{token}.ivfdata")))
    except BaseException:
        for leftover in (f32, ids_file, faiss_path.with_name(f"{faiss_path.name}.{token}.ivfdata")):
            try:
                leftover.unlink()
            except OSError:
                pass
        raise
    finally:
        if shard_dir is not None:
            for shard in shards:
                try:
                    os.unlink(shard)
                except OSError:
                    pass
            try:
                shard_dir.rmdir()
            except OSError:
                pass

    # 3. an ordinary lean VectorIndex over these files; its next save reuses them (same token)
    base = np.memmap(f32, dtype=np.float32, mode="r", shape=(count, dim)) if count else np.zeros((0, dim), np.float32)
    store = FullVectors(dim, base, all_ids)
    store.file, store.dirty = f32, False
    result = VectorIndex.from_trained(dim, index, plan, store, lean=True)
    report.plan = plan.describe() + (" on-disk lists" if disk else "")
    return result, report


def estimated_peak_bytes(n: int, dim: int, budget: int) -> int:
    """What `build_bounded` holds at most, by its own accounting (the benchmark checks RSS)."""
    plan, disk = _bounded_plan(n, dim, budget)
    if not plan.approximate:
        return n * dim * 4 * 2
    chunk = max(1024, min(65_536, budget // (16 * dim * 4)))
    train = max(plan.nlist * 39, min(plan.train_size, budget // (4 * dim * 4))) * dim * 4
    codes = 0 if disk else n * (math.ceil(plan.pq_m / 2) + 8)
    return train + 3 * chunk * dim * 4 + codes + n * 24

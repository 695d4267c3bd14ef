"""Which FAISS index a collection gets: the plan (kind, lists, codes, oversampling) chosen by size,
and the empty FAISS index it describes."""

from __future__ import annotations

import dataclasses
import math

import faiss

__all__ = [
    "EXACT_FILTER_MAX",
    "FLAT_MAX_ELEMENTS",
    "LEAN_MIN_VECTORS",
    "MIN_TRAIN_VECTORS",
    "IndexPlan",
    "build_faiss",
    "choose_plan",
    "divisor_at_most",
    "gpu_available",
]

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


def divisor_at_most(dim: int, m: int) -> int:
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
        return IndexPlan(
            "ivf_pq",
            nlist=nlist,
            nprobe=nprobe,
            pq_m=divisor_at_most(dim, dim // 8),
            oversample=oversample,
            train_size=train,
            lean=lean,
        )
    # 4-bit fast-scan PQ (dim/8 bytes a vector at dim 512) proposes k*oversample candidates that
    # are re-scored exactly; at 1M x 512 it beat IVF-SQ8 on latency for the same recall
    pq_m = max(dim // 4, min(dim // 2, 64))
    if lean:  # <= 64 bytes of codes, so codes + ids + id mapping stay under ~128 bytes a vector
        pq_m = min(pq_m, 128)
    pq_m = divisor_at_most(dim, pq_m)
    return IndexPlan(
        "ivf_pqfs", nlist=nlist, nprobe=nprobe, pq_m=pq_m, oversample=oversample, train_size=train, lean=lean
    )


def build_faiss(plan: IndexPlan, dim: int) -> faiss.Index:
    ip = faiss.METRIC_INNER_PRODUCT
    quantizer = faiss.IndexFlatIP(dim)
    if plan.kind == "ivf_flat":
        index: faiss.Index = faiss.IndexIVFFlat(quantizer, dim, plan.nlist, ip)
    elif plan.kind == "ivf_sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, plan.nlist, faiss.ScalarQuantizer.QT_8bit, ip)
    elif plan.kind == "ivf_pq":
        index = faiss.IndexIVFPQ(quantizer, dim, plan.nlist, plan.pq_m, 8, ip)
    elif plan.kind == "ivf_pqfs":
        index = faiss.IndexIVFPQFastScan(quantizer, dim, plan.nlist, plan.pq_m, 4, ip)
    else:
        raise ValueError(f"unknown index kind {plan.kind!r}")
    index.cp.niter = plan.kmeans_iter  # type: ignore[attr-defined]
    if hasattr(index, "pq"):
        index.pq.cp.niter = plan.kmeans_iter
    index.own_fields = True  # type: ignore[attr-defined]
    quantizer.this.disown()  # type: ignore[attr-defined]
    return index

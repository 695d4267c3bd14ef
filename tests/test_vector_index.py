"""VectorIndex: exact flat search, approximate plans with exact re-scoring, filters, persistence."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from xmodal.indexer.store.vector_index import FLAT_MAX_ELEMENTS, IndexPlan, VectorIndex, choose_plan, gpu_available

DIM = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _embeddings(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Embedding-like: low-rank clustered signal plus noise, unit norm."""
    rng = np.random.default_rng(seed)
    rank = 16
    centres = rng.standard_normal((64, rank))
    z = 0.85 * centres[rng.integers(0, 64, n)] + rng.standard_normal((n, rank))
    basis = rng.standard_normal((rank, dim)) / np.sqrt(dim)
    s = _unit(z @ basis)
    return _unit(s + 0.5 * rng.standard_normal((n, dim)) / np.sqrt(dim))


def _brute(base: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int):
    scores = queries @ base.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Training on a shared, busy machine: one OpenMP thread avoids spin-wait stalls."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    base = _embeddings(20_000)
    queries = _embeddings(50, seed=1)
    ids = np.arange(len(base), dtype=np.int64) * 7 + 3  # ids are not row numbers
    return base, ids, queries


def _exact(base, ids) -> VectorIndex:
    index = VectorIndex(DIM, use_gpu=False, auto_optimize=False)
    index.add(ids, base)
    return index


def _approx(base, ids, kind="ivf_sq8", lean=False) -> VectorIndex:
    pq_m = {"ivf_pq": DIM // 4, "ivf_pqfs": DIM // 2}.get(kind, 0)
    plan = IndexPlan(
        kind, nlist=128, nprobe=32, pq_m=pq_m, oversample=40 if kind == "ivf_pqfs" else 10, train_size=8_000, lean=lean
    )
    index = VectorIndex(DIM, use_gpu=False, auto_optimize=False)
    index.rebuild(base, ids, plan)
    return index


def test_flat_is_exact(data):
    base, ids, queries = data
    index = VectorIndex(DIM, use_gpu=False, auto_optimize=False)
    index.add(ids, base)
    scores, found = index.search(queries, 10)
    ref_scores, ref_ids = _brute(base, ids, queries, 10)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert _recall(found, ref_ids) == 1.0


def test_choose_plan_by_size():
    assert choose_plan(1000, 512).kind == "flat"
    assert choose_plan(FLAT_MAX_ELEMENTS // 512, 512).kind == "flat"
    big = choose_plan(1_000_000, 512)
    assert big.approximate and big.nprobe <= big.nlist and big.oversample >= 1
    lean = choose_plan(1_000_000, 512, lean=True)
    assert lean.lean and "pq" in lean.kind and lean.pq_m // 2 <= 64  # 4-bit codes: <= 64 bytes
    for dim in (100, 384, 768):  # PQ needs dim % m == 0
        plan = choose_plan(2_000_000, dim, gpu=False)
        assert dim % plan.pq_m == 0 and plan.pq_m % 2 == 0
    assert choose_plan(2_000_000, 512, gpu=True).kind == "ivf_pq"  # GPU FAISS has no fast-scan


@pytest.mark.parametrize("kind", ["ivf_sq8", "ivf_pqfs", "ivf_pq"])
def test_approximate_recall_and_exact_scores(data, kind):
    base, ids, queries = data
    index = _approx(base, ids, kind)
    scores, found = index.search(queries, 10)
    _, ref_ids = _brute(base, ids, queries, 10)
    assert _recall(found, ref_ids) >= 0.9
    # returned scores are exact inner products with the stored vectors, best first
    row = {int(i): r for r, i in enumerate(ids)}
    exact = np.array([[base[row[int(i)]] @ q for i in f] for f, q in zip(found, queries)])
    np.testing.assert_allclose(scores, exact, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_single_query_matches_batch(data):
    base, ids, queries = data
    index = _approx(base, ids)
    batch_scores, batch_ids = index.search(queries[:5], 10)
    for j in range(5):
        s, i = index.search(queries[j], 10)
        np.testing.assert_array_equal(i[0], batch_ids[j])


def test_vector_source_callable(data):
    base, ids, queries = data
    index = _approx(base, ids)
    row = {int(i): r for r, i in enumerate(ids)}
    calls = []

    def source(wanted: np.ndarray) -> np.ndarray:
        calls.append(len(wanted))
        return base[[row[int(i)] for i in wanted]]

    index.vector_source = source
    scores, found = index.search(queries[:3], 10)
    assert calls and found.shape == (3, 10)


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize("n_allowed", [5, 30, 15_000])
def test_allowed_ids_give_k_hits(data, approximate, n_allowed):
    base, ids, queries = data
    index = _approx(base, ids) if approximate else _exact(base, ids)
    rng = np.random.default_rng(3)
    allowed_rows = rng.choice(len(ids), n_allowed, replace=False)
    allowed = ids[allowed_rows]
    scores, found = index.search(queries[:5], 10, allowed_ids=allowed)
    assert found.shape == (5, min(10, n_allowed))
    assert np.all(found >= 0) and set(found.ravel()) <= set(allowed.tolist())
    if n_allowed <= 30:  # small sets are answered exactly
        _, ref = _brute(base[allowed_rows], allowed, queries[:5], min(10, n_allowed))
        assert _recall(found, ref) == 1.0


def test_allowed_ids_large_filter_uses_ivf_and_still_fills(data, monkeypatch):
    import xmodal.indexer.store.vector_index as vi

    base, ids, queries = data
    monkeypatch.setattr(vi, "EXACT_FILTER_MAX", 10)
    index = _approx(base, ids)
    allowed = ids[::97]  # ~206 ids scattered over all lists: IVF path with more probes, exact fallback
    scores, found = index.search(queries[:5], 10, allowed_ids=allowed)
    assert found.shape == (5, 10) and np.all(found >= 0)
    assert set(found.ravel()) <= set(allowed.tolist())


@pytest.mark.parametrize("approximate", [False, True])
def test_remove_and_readd(data, approximate):
    base, ids, queries = data
    index = _approx(base, ids) if approximate else _exact(base, ids)
    _, before = index.search(queries[:3], 10)
    gone = np.unique(before[:, :3])
    index.remove(gone)
    assert len(index) == len(ids) - len(gone)
    _, after = index.search(queries[:3], 10)
    assert not set(after.ravel()) & set(gone.tolist())
    # re-adding an id replaces it (no duplicates)
    row = {int(i): r for r, i in enumerate(ids)}
    index.add(gone, base[[row[int(i)] for i in gone]])
    index.add(gone[:1], base[[row[int(gone[0])]]])
    assert len(index) == len(ids)
    _, again = index.search(queries[:3], 10)
    assert set(gone.tolist()) <= set(again.ravel().tolist())


@pytest.mark.parametrize("kind,lean", [("flat", False), ("ivf_sq8", False), ("ivf_pqfs", True)])
def test_save_load_round_trip(data, tmp_path, kind, lean):
    base, ids, queries = data
    if kind == "flat":
        index = VectorIndex(DIM, use_gpu=False, auto_optimize=False)
        index.add(ids, base)
    else:
        index = _approx(base, ids, kind, lean=lean)
    index.remove(ids[:10])
    extra = _embeddings(5, seed=9)
    index.add(np.array([10**9 + j for j in range(5)]), extra)
    want_s, want_i = index.search(queries, 10)
    path = tmp_path / "vectors.faiss"
    index.save(path, generation=42)
    if lean:  # after a save, a lean index keeps its full vectors in the mapped file only
        assert isinstance(index._store.base, np.memmap)
        np.testing.assert_array_equal(index.search(queries, 10)[1], want_i)
    loaded = VectorIndex.load(path, DIM, use_gpu=False)
    assert loaded is not None
    copy, generation = loaded
    assert generation == 42 and len(copy) == len(index) and copy.plan == index.plan
    got_s, got_i = copy.search(queries, 10)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-6)
    if lean:
        assert isinstance(copy._store.base, np.memmap)
        assert copy.resident_bytes() / len(copy) < 4 * DIM  # full vectors not resident
    # saving again (unchanged) reuses the vector file; changed, it writes a new one and drops the old
    copy.save(path, generation=43)
    copy.add(np.array([7]), extra[:1])
    copy.save(path, generation=44)
    side = sorted(p.name for p in tmp_path.iterdir())
    assert len([s for s in side if s.endswith(".f32")]) == (0 if kind == "flat" else 1)
    third, generation = VectorIndex.load(path, DIM, use_gpu=False)
    assert generation == 44 and len(third) == len(index) + 1


def test_load_rejects_mismatch(data, tmp_path):
    base, ids, _ = data
    index = _approx(base[:5000], ids[:5000])
    path = tmp_path / "v.faiss"
    index.save(path, 1)
    assert VectorIndex.load(path, DIM + 1) is None
    for f in tmp_path.glob("*.f32"):
        f.unlink()
    assert VectorIndex.load(path, DIM) is None
    assert VectorIndex.load(tmp_path / "missing.faiss", DIM) is None


def test_auto_switch_from_flat(data, monkeypatch):
    import xmodal.indexer.store.plan as plan

    base, ids, queries = data
    monkeypatch.setattr(plan, "FLAT_MAX_ELEMENTS", 5_000 * DIM)
    index = VectorIndex(DIM, use_gpu=False)
    index.add(ids[:5000], base[:5000])
    assert index.plan.kind == "flat"
    index.add(ids[5000:], base[5000:])
    assert index.plan.approximate and len(index) == len(ids)
    _, found = index.search(queries, 10)
    _, ref = _brute(base, ids, queries, 10)
    assert _recall(found, ref) >= 0.9
    index.optimize(IndexPlan("flat"))  # explicit plan, e.g. from `xmodal optimize`
    assert index.plan.kind == "flat" and len(index) == len(ids)


def test_approximate_plan_on_tiny_collection_stays_exact(data):
    base, ids, queries = data
    index = VectorIndex(DIM, use_gpu=False, auto_optimize=False)
    index.rebuild(base[:100], ids[:100], choose_plan(10**6, DIM))
    assert index.plan.kind == "flat" and len(index) == 100
    _, found = index.search(queries, 5)
    assert _recall(found, _brute(base[:100], ids[:100], queries, 5)[1]) == 1.0


@pytest.mark.skipif(not gpu_available(), reason="no GPU build of FAISS / no CUDA GPU")
def test_gpu_search_matches_cpu(data):
    base, ids, queries = data
    cpu = VectorIndex(DIM, use_gpu=False, auto_optimize=False)
    gpu = VectorIndex(DIM, use_gpu=True, auto_optimize=False)
    cpu.add(ids, base)
    gpu.add(ids, base)
    _, a = cpu.search(queries, 10)
    _, b = gpu.search(queries, 10)
    assert _recall(b, a) >= 0.99


def test_searches_never_see_half_a_change(data):
    """A reader catches up in place while its searches run (indexer.store.index_store): each
    search sees the index before or after a change applied with `apply`, never in between."""
    import sys
    import threading

    base, ids, queries = data
    n = 400
    first, second = ids[:n], ids[n : 2 * n]
    index = VectorIndex(DIM, use_gpu=False, auto_optimize=False)
    index.add(first, base[:n])
    seen: list[int] = []
    stop = threading.Event()

    def search() -> None:
        while not stop.is_set():
            _, found = index.search(queries[:2], n)
            for row in found:
                present = row[row >= 0]
                ok = len(present) == n and (set(present) == set(first) or set(present) == set(second))
                seen.append(int(ok))

    threads = [threading.Thread(target=search) for _ in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch often: a change left half-done would be seen
    for t in threads:
        t.start()
    try:
        for turn in range(200):  # swap all n rows for the other n, and back
            gone, come = (first, second) if turn % 2 == 0 else (second, first)
            rows = base[:n] if come is first else base[n : 2 * n]
            index.apply(come, rows, gone)
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(interval)
    assert seen and all(seen), f"{seen.count(0)} of {len(seen)} searches saw half a change"

"""Building the FAISS cache from SQL in streamed chunks within a memory budget: the same answers as
exact search (recall), in RAM and with on-disk inverted lists, saved and reopened like any cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xmodal.indexer.store.bounded_build import build_bounded, iter_vectors, parse_bytes
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import ImageRow, utcnow
from xmodal.indexer.store.vector_index import IndexPlan

DIM = 16


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, DIM))
    x = centres[rng.integers(0, 200, n)] + 0.3 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _store_with(index_dir: Path, vectors: np.ndarray) -> None:
    store = IndexStore.open(index_dir, create=True)
    try:
        store.check_model("synthetic:test", DIM)
        now = utcnow()
        rows = [
            dict(
                path=f"/s/{i:06d}.jpg",
                size=1,
                mtime_ns=1,
                content_hash="",
                width=1,
                height=1,
                model="synthetic:test",
                indexed_at=now,
                vector=v.astype("<f4").tobytes(),
            )
            for i, v in enumerate(vectors)
        ]
        with store.metadata.engine.begin() as connection:
            connection.execute(ImageRow.__table__.insert(), rows)
        with store.metadata.session() as s, s.begin():
            store.metadata.bump_generation(s, "image")
    finally:
        store.close()


def _recall(found: np.ndarray, queries: np.ndarray, vectors: np.ndarray) -> float:
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] + 1  # SQL ids start at 1
    return float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]))


def test_parse_bytes() -> None:
    assert parse_bytes("2GB") == 2 * 1024**3
    assert parse_bytes("512 MiB") == 512 * 1024**2
    assert parse_bytes("1.5G") == int(1.5 * 1024**3)
    assert parse_bytes("1000") == 1000
    with pytest.raises(ValueError):
        parse_bytes("lots")


def test_streamed_vectors_are_the_stored_ones_in_id_order(tmp_path: Path) -> None:
    vectors = _clustered(2500)
    _store_with(tmp_path / "idx", vectors)
    store = IndexStore.open(tmp_path / "idx")
    try:
        chunks = list(iter_vectors(store.metadata, ImageRow, chunk=1000))
    finally:
        store.close()
    assert [len(ids) for ids, _ in chunks] == [1000, 1000, 500]
    assert np.array_equal(np.concatenate([ids for ids, _ in chunks]), np.arange(1, 2501))
    assert np.array_equal(np.concatenate([v for _, v in chunks]), vectors)


@pytest.mark.parametrize("on_disk", [False, True])
def test_bounded_build_finds_what_exact_search_finds(tmp_path: Path, on_disk: bool) -> None:
    vectors = _clustered(8000)
    _store_with(tmp_path / "idx", vectors)
    plan = IndexPlan("ivf_pqfs", nlist=64, nprobe=16, pq_m=8, oversample=40, train_size=4000, lean=True)
    store = IndexStore.open(tmp_path / "idx")
    try:
        index, report = build_bounded(
            store.metadata, ImageRow, DIM, store.faiss_path("image"), budget=1024**2, plan=plan, on_disk=on_disk
        )
    finally:
        store.close()
    assert (report.vectors, len(index), report.on_disk) == (8000, 8000, on_disk)
    assert report.chunks >= 2  # streamed, not read at once
    queries = _clustered(50, seed=1)
    scores, found = index.search(queries, 10)
    assert _recall(found, queries, vectors) >= 0.9
    exact = np.einsum("qd,qkd->qk", queries, vectors[found - 1])
    np.testing.assert_allclose(scores, exact, atol=1e-5, rtol=0)  # candidates re-scored exactly
    if on_disk:
        assert list((tmp_path / "idx").glob("images.faiss.*.ivfdata"))


def test_optimize_with_a_memory_budget_saves_a_cache_that_reopens(tmp_path: Path) -> None:
    """`xmodal optimize --memory-budget`: a budget too small for the codes puts the lists on disk;
    the saved cache is what the next process opens (no rebuild), with the same answers."""
    from typer.testing import CliRunner

    from xmodal.cli.app import app

    vectors = _clustered(52_000)
    _store_with(tmp_path / "idx", vectors)
    result = CliRunner().invoke(app, ["optimize", "--index", str(tmp_path / "idx"), "--memory-budget", "1MB"])
    assert result.exit_code == 0, result.output
    assert "on-disk lists" in result.output and "52000 vectors" in result.output
    queries = _clustered(30, seed=2)
    store = IndexStore.open(tmp_path / "idx")
    try:
        index = store.vectors("image")
        assert index.plan.lean and index.plan.approximate
        _, found = index.search(queries, 10)
    finally:
        store.close()
    assert _recall(found, queries, vectors) >= 0.9
    bad = CliRunner().invoke(app, ["optimize", "--index", str(tmp_path / "idx"), "--memory-budget", "lots"])
    assert bad.exit_code == 2 and "--memory-budget" in bad.output

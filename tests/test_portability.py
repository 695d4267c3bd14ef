"""Code that must behave the same on Linux, macOS and Windows: the decode pool under `spawn`
(forced here on Linux), folder filters with Windows paths (pure functions, on any machine), and
the choice of device and onnxruntime execution providers."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select

from xmodal.indexer.accelerators import choose_providers, onnx_providers, resolve_device
from xmodal.indexer.paths import folder_prefixes
from xmodal.indexer.store.schema import under_clause
from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model


# --- the decode pool under spawn -------------------------------------------------------------------


def _decoded(photos: list[Path], start_method: str) -> list[np.ndarray]:
    from xmodal.indexer.decode_pool import Work, decode_pool, prefetch, prepare
    from xmodal.indexer.models.preprocess import OFFLINE_PREPROCESSING, split_transform
    from xmodal.indexer.scanning import FoundFile

    split = split_transform(OFFLINE_PREPROCESSING.transform())  # a real torchvision pipeline, pickled under spawn
    work = [Work(FoundFile(p, p.stat().st_size, p.stat().st_mtime_ns), None) for p in photos]
    with decode_pool(2, split.per_image, 224, start_method) as pool:  # type: ignore[arg-type]
        batches = list(prefetch(pool, work, 2, prepare))
    prepared = [p for batch in batches for p in batch]
    assert all(p.error is None and p.work.content_hash for p in prepared), [p.error for p in prepared]
    return [np.asarray(p.pixels) for p in prepared]


def test_spawned_decode_workers_give_what_forked_ones_give(tmp_path: Path) -> None:
    photos = [make_image(tmp_path / f"{name}.jpg", rgb, size=(320 + 16 * i, 240)) for i, (name, rgb) in enumerate(COLOURS.items())]
    photos.append(make_image(tmp_path / "wide.png", (10, 20, 30), size=(900, 200)))
    spawned = _decoded(photos, "spawn")
    forked = _decoded(photos, "fork")
    assert len(spawned) == len(photos) and all(a.shape == (224, 224, 3) and a.dtype == np.uint8 for a in spawned)
    assert all(np.array_equal(a, b) for a, b in zip(spawned, forked))


@pytest.mark.skipif(not hasattr(os, "nice"), reason="no nice() on this platform")
def test_a_worker_lowers_its_priority_once_however_many_tasks_it_runs() -> None:
    """A Ray decode worker calls init_worker for every task: its nice value must stay at +10."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        before, after = pool.apply(_nice_after_inits, (5,))
    assert after - before == min(10, 19 - before)


def _nice_after_inits(times: int) -> tuple[int, int]:
    from xmodal.indexer import decode_pool

    before = os.nice(0)
    for _ in range(times):
        decode_pool.init_worker(lambda image: image, 224)
    return before, os.nice(0)


def test_an_index_run_with_spawned_workers_equals_a_forked_one(tmp_path: Path, photo_dir: Path) -> None:
    from xmodal.indexer import Indexer
    from xmodal.search import SearchEngine

    vectors = {}
    for method in ("spawn", "fork"):
        summary = Indexer(tmp_path / method, model=fake_model(), start_method=method).add_paths([photo_dir])  # type: ignore[arg-type]
        assert (summary.new, summary.failed) == (4, 0)
        with SearchEngine.open(tmp_path / method, model=fake_model()) as engine:
            hits = engine.search_text("red", k=4, rerank=False)
            vectors[method] = {Path(h.path).name: engine.vectors([h.id])[0] for h in hits}
    assert vectors["spawn"].keys() == vectors["fork"].keys()
    assert all(np.allclose(vectors["spawn"][k], vectors["fork"][k]) for k in vectors["fork"])


# --- folder filters with Windows paths (pure) ------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "flavour", "want"),
    [
        ("C:/Users/me/Pictures/", PureWindowsPath, ("C:\\Users\\me\\Pictures", "C:\\Users\\me\\Pictures\\")),
        ("C:\\Users\\me\\Pictures", PureWindowsPath, ("C:\\Users\\me\\Pictures", "C:\\Users\\me\\Pictures\\")),
        ("D:\\", PureWindowsPath, ("D:\\", "D:\\")),
        ("\\\\nas\\photos\\2023", PureWindowsPath, ("\\\\nas\\photos\\2023", "\\\\nas\\photos\\2023\\")),
        ("/home/me/Pictures/", PurePosixPath, ("/home/me/Pictures", "/home/me/Pictures/")),
        ("/", PurePosixPath, ("/", "/")),
    ],
)
def test_folder_prefixes(folder: str, flavour: type, want: tuple[str, str]) -> None:
    assert folder_prefixes(folder, flavour) == want


def test_under_filter_with_windows_paths_in_sql() -> None:
    """The --under clause over stored Windows paths: inside the folder only, not its prefix-sharing sibling."""
    engine = create_engine("sqlite://")
    table = Table("rows", MetaData(), Column("id", Integer, primary_key=True), Column("path", String))
    table.metadata.create_all(engine)
    stored = ["C:\\Photos\\a.jpg", "C:\\Photos\\trip\\b.jpg", "C:\\Photos 2\\c.jpg", "C:\\PhotosX.jpg", "C:\\Photos"]
    with engine.begin() as conn:
        conn.execute(insert(table), [{"id": i, "path": p} for i, p in enumerate(stored)])
        chosen = conn.execute(select(table.c.path).where(under_clause(table.c.path, ["C:/Photos/"], PureWindowsPath))).scalars()
        assert sorted(chosen) == ["C:\\Photos", "C:\\Photos\\a.jpg", "C:\\Photos\\trip\\b.jpg"]


# --- devices and execution providers ---------------------------------------------------------------


def test_execution_providers_best_first_and_cpu_last() -> None:
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(everything) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CoreMLExecutionProvider", "CPUExecutionProvider"]) == ["CoreMLExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["DmlExecutionProvider", "CPUExecutionProvider"]) == ["DmlExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(everything, "cpu") == ["CPUExecutionProvider"]
    assert choose_providers(everything, "mps") == ["CoreMLExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"], "cuda") == ["CPUExecutionProvider"]  # asked for, not installed


def test_this_machine_resolves_to_what_it_has() -> None:
    import onnxruntime
    import torch

    device = resolve_device("auto")
    if torch.cuda.is_available():
        assert device == "cuda"
    elif torch.backends.mps.is_available():
        assert device == "mps"
    else:
        assert device == "cpu"
    assert resolve_device("cpu") == "cpu"
    assert onnx_providers()[-1] == "CPUExecutionProvider"
    assert set(onnx_providers()) <= set(onnxruntime.get_available_providers())

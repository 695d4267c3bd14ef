"""The indexing run: scan, skip what is unchanged, follow moves, embed the rest in batches.

Each batch is written in one SQL transaction (rows and vectors together), so a killed run loses at
most the batch in flight and the next run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from xmodal.indexer.errors import ImageReadError, ModelMismatchError
from xmodal.indexer.images import decode_image
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.models.spec import model_fingerprint
from xmodal.indexer.models.spec import parse_model_spec

if TYPE_CHECKING:  # torch is imported only when there is something to embed
    import torch

    from xmodal.indexer.models.embedding import EmbeddingModel, IndexedPixels
from xmodal.indexer.scanning import FoundFile, SkippedFile, scan_paths
from xmodal.indexer.store.schema import FailureRow, ImageRow, features_to_blob, utcnow, vector_to_blob

__all__ = ["IndexSummary", "Progress", "Indexer", "file_hash"]

# Save the FAISS cache at most this often during a run; SQL holds every finished batch anyway.
_SAVE_INTERVAL_S = 60.0


@dataclass
class IndexSummary:
    """What one run did. `timings` says where the time went, per stage, in seconds."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    failed: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def embedded(self) -> int:
        return self.new + self.updated

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "moved": self.moved,
            "removed": self.removed,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


# A photo's size plus its first and last 256 KiB identify it (headers, EXIF and entropy-coded
# data differ between any two real photos); reading whole 12-MP files would cost as much as decoding.
_HASH_SPAN = 256 * 1024


def file_hash(path: Path) -> str:
    """Content hash used to recognise a moved or renamed file."""
    digest = hashlib.blake2b(digest_size=20)
    # O_NONBLOCK: a FIFO swapped in after the scan must not block the run (no effect on files)
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)), "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file (FIFO, socket or device)")
        digest.update(st.st_size.to_bytes(8, "little"))
        digest.update(f.read(_HASH_SPAN))
        if st.st_size > 2 * _HASH_SPAN:
            f.seek(-_HASH_SPAN, os.SEEK_END)
        digest.update(f.read(_HASH_SPAN))
    return digest.hexdigest()


@dataclass
class _Work:
    """A file to embed; row_id set when it replaces an existing row (a changed file)."""

    found: FoundFile
    row_id: int | None
    content_hash: str | None = None


@dataclass
class _Prepared:
    work: _Work
    pixels: np.ndarray | torch.Tensor | None = None  # per_image output of the split transform
    width: int = 0
    height: int = 0
    taken_at: object = None
    error: str | None = None
    seconds: float = 0.0


class Indexer:
    """Adds folders of photos to an index. A library user calls it the same way the CLI does."""

    def __init__(
        self,
        index_dir: Path | str | None = None,
        model: EmbeddingModel | str | None = None,
        db_url: str | None = None,
        batch_size: int = 32,
        workers: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.index_dir = index_dir
        self.db_url = db_url
        self._model = model
        self.batch_size = batch_size
        self.workers = workers or max(1, (os.cpu_count() or 2))
        self.on_progress = on_progress

    @property
    def model(self) -> EmbeddingModel | None:
        """The model once a run has loaded it (or the one given)."""
        return None if self._model is None or isinstance(self._model, str) else self._model

    def _check_model(self, store: IndexStore) -> None:
        """Refuse another model than the index's before anything is loaded or written."""
        recorded = store.model_spec
        if self.model is not None:
            store.check_model(str(self._model.spec), self._model.dim, model_fingerprint(self._model.spec))
            return
        if not recorded:  # a new index: its model is the one asked for, or the default
            model = self._load(store)
            store.check_model(str(model.spec), model.dim, model_fingerprint(model.spec))
            return
        asked = parse_model_spec(self._model) if isinstance(self._model, str) else parse_model_spec(recorded)
        if str(asked) != recorded:
            raise ModelMismatchError(
                f"index '{store.directory}' was built with model '{recorded}', not '{asked}'; use --model '{recorded}' or another --index"
            )
        store.check_fingerprint(model_fingerprint(asked))

    def _load(self, store: IndexStore) -> EmbeddingModel:
        """The model, loaded on first need: a run with nothing new to embed never loads it."""
        if self.model is None:
            from xmodal.indexer.models.embedding import load_model

            self._model = load_model(self._model or store.model_spec)
        return self._model  # type: ignore[return-value]

    def add_paths(self, paths: Iterable[Path | str]) -> IndexSummary:
        """Index every photo under the paths; returns the run's summary."""
        started = time.perf_counter()
        roots = [Path(os.path.abspath(Path(os.fsdecode(p)).expanduser())) for p in paths]
        store = IndexStore.open(self.index_dir, self.db_url, create=True)
        try:
            with store.write_lock():
                self._check_model(store)
                summary = self._run(store, roots)
                store.save_vectors()
        finally:
            store.close()
        summary.seconds = time.perf_counter() - started
        return summary

    # --- the run ----------------------------------------------------------------------------
    def _run(self, store: IndexStore, roots: list[Path]) -> IndexSummary:
        summary = IndexSummary()
        clock = time.perf_counter()
        found: list[FoundFile] = []
        skipped: list[SkippedFile] = []
        for item in scan_paths(roots):
            (found if isinstance(item, FoundFile) else skipped).append(item)
        summary.timings["scan"] = time.perf_counter() - clock

        clock = time.perf_counter()
        # A root that is not there (an unmounted drive, a typo) removes nothing: only roots that
        # exist can say which of their files are gone.
        present_roots = [str(r) for r in roots if os.path.lexists(r)]
        existing = {row.path: row for row in store.metadata.image_rows_under(present_roots)} if present_roots else {}
        seen_paths = {str(f.path) for f in found}
        missing = {path: row for path, row in existing.items() if path not in seen_paths}
        missing_by_hash: dict[str, list[ImageRow]] = {}
        for row in missing.values():
            missing_by_hash.setdefault(row.content_hash, []).append(row)

        # Photos indexed before the offline default stored its tower features are embedded again,
        # so the learned reranker (search.fusion) covers them too.
        spec = store.model_spec
        stale = store.metadata.ids_without_features() if spec and parse_model_spec(spec).is_offline_default else set()
        work: list[_Work] = []
        moves: list[tuple[ImageRow, FoundFile]] = []
        for f in found:
            row = existing.get(str(f.path))
            if row is not None and row.size == f.size and row.mtime_ns == f.mtime_ns and row.id not in stale:
                summary.unchanged += 1
                continue
            if row is not None:
                work.append(_Work(f, row.id))
                continue
            if not missing_by_hash:  # nothing can have moved here: the decode workers hash it
                work.append(_Work(f, None))
                continue
            try:
                digest = file_hash(f.path)
            except OSError as e:
                skipped.append(SkippedFile(f.path, f"cannot read: {e.strerror or e}"))
                continue
            candidates = missing_by_hash.get(digest)
            if candidates:
                moved_row = candidates.pop()
                missing.pop(moved_row.path, None)
                moves.append((moved_row, f))
            else:
                work.append(_Work(f, None, digest))
        summary.timings["compare"] = time.perf_counter() - clock

        vectors = store.vectors("image")
        self._apply_moves_and_removals(store, moves, list(missing.values()), skipped, roots, summary)
        vectors.remove(np.array([row.id for row in missing.values()], dtype=np.int64))
        if work:
            self._embed_all(store, self._load(store), work, summary)
        return summary

    def _apply_moves_and_removals(
        self,
        store: IndexStore,
        moves: list[tuple[ImageRow, FoundFile]],
        removed: list[ImageRow],
        skipped: list[SkippedFile],
        roots: list[Path],
        summary: IndexSummary,
    ) -> None:
        now = utcnow()
        with store.metadata.session() as s, s.begin():
            for row, f in moves:
                s.query(ImageRow).filter(ImageRow.id == row.id).update(
                    {"path": str(f.path), "size": f.size, "mtime_ns": f.mtime_ns, "indexed_at": now}
                )
            store.metadata.delete_ids(ImageRow, [row.id for row in removed], s)
            # Failures under these roots are re-decided by this run.
            prefixes = tuple(str(r).rstrip("/") + "/" for r in roots)
            for failure in s.scalars(select(FailureRow)).all():
                if failure.path.startswith(prefixes) or failure.path in {str(r) for r in roots}:
                    s.delete(failure)
            for item in skipped:
                s.merge(FailureRow(path=str(item.path), reason=item.reason, failed_at=now))
            store.metadata.bump_generation(s, "image")
        summary.moved = len(moves)
        summary.removed = len(removed)
        summary.failed += len(skipped)
        summary.failures.extend((str(item.path), item.reason) for item in skipped)

    def _embed_all(self, store: IndexStore, model: EmbeddingModel, work: list[_Work], summary: IndexSummary) -> None:
        from xmodal.indexer.models.preprocess import split_transform

        vectors = store.vectors("image")
        target = _decode_size(model.image_transform)
        split = split_transform(model.image_transform)
        total = len(work)
        done = 0
        last_save = time.perf_counter()
        timings = {"decode": 0.0, "embed": 0.0, "write": 0.0}
        if self.on_progress:
            self.on_progress(Progress(0, total))
        with _decode_pool(self.workers, split.per_image, target) as pool:
            for batch in _prefetch(pool, work, self.batch_size, _prepare):
                good = [p for p in batch if p.error is None]
                timings["decode"] += sum(p.seconds for p in batch) / self.workers
                clock = time.perf_counter()
                embedded = model.embed_pixels_for_index(split.per_batch([p.pixels for p in good])) if good else None
                embeddings = embedded.vectors if embedded is not None else None
                timings["embed"] += time.perf_counter() - clock
                clock = time.perf_counter()
                ids = self._write_batch(store, model, batch, good, embedded, summary)
                if embeddings is not None:
                    replaced = np.array([p.work.row_id for p in good if p.work.row_id is not None], dtype=np.int64)
                    vectors.remove(replaced)
                    vectors.add(np.array(ids, dtype=np.int64), embeddings)
                if time.perf_counter() - last_save > _SAVE_INTERVAL_S:
                    store.save_vectors()
                    last_save = time.perf_counter()
                timings["write"] += time.perf_counter() - clock
                done += len(batch)
                if self.on_progress:
                    self.on_progress(Progress(done, total))
        summary.timings.update(timings)

    def _write_batch(
        self,
        store: IndexStore,
        model: EmbeddingModel,
        batch: list[_Prepared],
        good: list[_Prepared],
        embedded: IndexedPixels | None,
        summary: IndexSummary,
    ) -> list[int]:
        """One transaction for the whole batch: rows, vectors, failures and the new generation."""
        now = utcnow()
        ids: list[int] = []
        spec = str(model.spec)
        with store.metadata.session() as s, s.begin():
            for position, (prepared, vector) in enumerate(zip(good, embedded.vectors if embedded is not None else [])):
                f = prepared.work.found
                values = dict(
                    path=str(f.path),
                    size=f.size,
                    mtime_ns=f.mtime_ns,
                    content_hash=prepared.work.content_hash or "",
                    width=prepared.width,
                    height=prepared.height,
                    taken_at=prepared.taken_at,
                    model=spec,
                    indexed_at=now,
                    vector=vector_to_blob(vector),
                    features=features_to_blob(embedded.tower_features[position]) if embedded.tower_features is not None else None,
                )
                if prepared.work.row_id is not None:
                    row = s.get(ImageRow, prepared.work.row_id)
                    if row is not None:
                        for key, value in values.items():
                            setattr(row, key, value)
                        ids.append(row.id)
                        summary.updated += 1
                        continue
                row = ImageRow(**values)
                s.add(row)
                s.flush()
                ids.append(row.id)
                summary.new += 1
            for prepared in batch:
                if prepared.error is not None:
                    path = str(prepared.work.found.path)
                    if prepared.work.row_id is not None:  # a changed file that no longer decodes
                        old = s.get(ImageRow, prepared.work.row_id)
                        if old is not None:
                            s.delete(old)
                    s.merge(FailureRow(path=path, reason=prepared.error, failed_at=now))
                    summary.failed += 1
                    summary.failures.append((path, prepared.error))
            store.metadata.bump_generation(s, "image")
        bad_replaced = [p.work.row_id for p in batch if p.error is not None and p.work.row_id is not None]
        if bad_replaced:
            store.vectors("image").remove(np.array(bad_replaced, dtype=np.int64))
        return ids


def _decode_size(transform: Callable) -> int:
    """The model's input size: JPEG draft decoding stops at the first scale at least this large."""
    size = 224
    for t in getattr(transform, "transforms", []):
        s = getattr(t, "size", None)
        if isinstance(s, int):
            size = max(size, s)
        elif isinstance(s, Sequence) and s:
            size = max(size, int(max(s)))
    return size


# Set once per worker process by _init_worker: the model's preprocessing and decode size.
_WORKER_TRANSFORM: Callable | None = None
_WORKER_TARGET = 224


def _init_worker(transform: Callable, target: int) -> None:
    global _WORKER_TRANSFORM, _WORKER_TARGET
    _WORKER_TRANSFORM, _WORKER_TARGET = transform, target
    try:  # one intra-op thread: torch ops on one small image cost more in thread sync than work
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    # Decoding yields to the model: a preempted OpenMP thread stalls the whole forward pass
    # (measured: +4% images/s on 2 cores).
    if multiprocessing.current_process().name != "MainProcess":
        os.nice(10)


def _decode_pool(workers: int, transform: Callable, target: int) -> Executor:
    """Worker processes that decode, hash and preprocess photos while the model runs.

    fork (as PyTorch's DataLoader does on Linux) shares the loaded modules; each worker runs torch
    with a single thread. Where fork is unavailable (or inside a daemon process, which may have no
    children) the work runs in threads instead.
    """
    if "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon:
        return ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker, initargs=(transform, target)
        )
    _init_worker(transform, target)
    return ThreadPoolExecutor(max_workers=workers)


def _prepare(work: _Work) -> _Prepared:
    transform, target = _WORKER_TRANSFORM, _WORKER_TARGET
    assert transform is not None
    started = time.perf_counter()
    try:
        if work.content_hash is None:
            work.content_hash = file_hash(work.found.path)
        decoded = decode_image(work.found.path, target)
        pixels = transform(decoded.image)
        return _Prepared(work, pixels, decoded.width, decoded.height, decoded.taken_at, seconds=time.perf_counter() - started)
    except ImageReadError as e:
        return _Prepared(work, error=str(e), seconds=time.perf_counter() - started)
    except OSError as e:
        return _Prepared(work, error=f"cannot read: {e.strerror or e}", seconds=time.perf_counter() - started)
    except Exception as e:  # a decoder bug on one hostile file must not stop the run
        return _Prepared(work, error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - started)


def _prefetch(pool: Executor, work: Sequence[_Work], batch_size: int, fn: Callable[[_Work], _Prepared]) -> Iterator[list[_Prepared]]:
    """Yield prepared batches in order while the next batch is decoded in the background."""
    batches = [work[i : i + batch_size] for i in range(0, len(work), batch_size)]
    pending = [[pool.submit(fn, w) for w in batch] for batch in batches[:2]]
    for i in range(len(batches)):
        current = pending.pop(0)
        if i + 2 < len(batches):
            pending.append([pool.submit(fn, w) for w in batches[i + 2]])
        yield [future.result() for future in current]

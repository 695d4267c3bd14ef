"""The indexing run: scan, skip what is unchanged, follow moves, embed the rest in batches.

Each batch is written in one SQL transaction (rows and vectors together), so a killed run loses at
most the batch in flight and the next run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, select

from xmodal.indexer.decode_pool import (
    Prepared,
    PreparedVideo,
    StartMethod,
    Work,
    decode_pool,
    decode_size,
    file_hash,
    prefetch,
)
from xmodal.indexer.facts import read_facts, rename_facts, stale_facts, write_facts
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits
from xmodal.indexer.models.spec import model_fingerprint
from xmodal.indexer.paths import absolute
from xmodal.indexer.photo_text import OcrConfig, TextReader
from xmodal.indexer.photo_text_stage import TextStageSummary
from xmodal.indexer.progress import Progress
from xmodal.indexer.roots import (
    forget_roots,
    is_inside,
    looks_offline,
    minimal_folders,
    recorded_roots,
    remember_roots,
    rows_under,
)
from xmodal.indexer.scanning import UNREAD_PREFIX, FoundFile, SkippedFile, unread_extension, video_not_read
from xmodal.indexer.signals import DEFAULT_SIGNALS, Signal
from xmodal.indexer.sources import FolderWalk, ListedFiles, Source
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.model_check import check_model_matches
from xmodal.indexer.store.schema import FailureRow, FrameRow, ImageRow, under_clause, utcnow, vector_to_blob
from xmodal.indexer.videos import typical_frame, video_support

if TYPE_CHECKING:  # torch is imported only when there is something to embed
    from xmodal.indexer.distributed import RayOptions
    from xmodal.indexer.models.embedding import EmbeddingModel, IndexedPixels

__all__ = ["IndexSummary", "Progress", "Indexer", "EmbeddedBatch", "file_hash"]

# One batch as a source of embeddings hands it to the write loop: every prepared file of the batch,
# the ones that decoded, and their embeddings (None when none decoded).
EmbeddedBatch = tuple[list[Prepared], list[Prepared], "IndexedPixels | None"]

# Photos whose facts an older run lacks are read and written this many at a time (one transaction each).
_FACTS_BATCH = 256
# A video's frames are embedded this many at a time as they arrive. onnxruntime plans memory per
# batch shape: a new shape's first run costs about twice a warm one (measured: 40 frames 1.7 CPU s
# cold, 0.8 s warm), and per frame 8 cost no more than 40. Few, small shapes stay warm.
_VIDEO_BATCH = 8
# Save the FAISS cache at most this often during a run; SQL holds every finished batch anyway.
_SAVE_INTERVAL_S = 60.0


def _video_inside(prepared: Prepared) -> bool:
    """A file the photo decoder found to be a video by its content (a `.jpg` that is an MP4)."""
    return prepared.error is not None and prepared.error.startswith(f"{UNREAD_PREFIX}video ")


def _as_video(work: Work) -> Work:
    return Work(replace(work.found, media="video"), work.row_id, work.content_hash)


def _joined(parts: list[IndexedPixels]) -> IndexedPixels:
    """One video's embedded batches as one."""
    from xmodal.indexer.models.embedding import IndexedPixels

    if len(parts) == 1:
        return parts[0]
    features = [p.tower_features for p in parts]
    return IndexedPixels(
        np.concatenate([p.vectors for p in parts]),
        None if any(f is None for f in features) else np.concatenate(features),  # type: ignore[arg-type]
    )


def _offline_roots(store: IndexStore, folder_roots: Sequence[str]) -> dict[str, int]:
    """The roots this run must not judge by their files, with the photos the index holds under
    each: every recorded root that a run root lies in or holds, and every run root no recorded root
    holds, that looks offline with photos under it (outermost only: nested ones are inside)."""
    recorded = recorded_roots(store.metadata)
    judged = [r for r in recorded if any(is_inside(r, f) or is_inside(f, r) for f in folder_roots)]
    judged += [f for f in folder_roots if not any(is_inside(f, r) for r in recorded)]
    offline = {r: rows_under(store.metadata, r) for r in dict.fromkeys(judged) if looks_offline(r)}
    return {r: offline[r] for r in minimal_folders(r for r, n in offline.items() if n > 0)}


def _moment(value: object) -> datetime | None:
    """A decoder's time for the facts (a video's creation time), when it gave one."""
    return value if isinstance(value, datetime) else None


def _split_roots(roots: Sequence[Path]) -> tuple[list[str], list[str]]:
    """(files named one by one, the other roots: folders and roots that are not there). Named files
    go to SQL by path: a folder clause per file is a SQL expression per file to compile (0.3 s for
    256 photos), for nothing a file can hold."""
    files = [str(r) for r in roots if os.path.lexists(r) and not os.path.isdir(r)]
    named = set(files)
    return files, [str(r) for r in roots if str(r) not in named]


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
    skipped: dict[str, int] = field(default_factory=dict)  # files of kinds not read (RAW, video), by extension
    # Roots that are not there or are empty while the index holds photos under them (an unmounted
    # drive): their rows were kept. kept_missing: rows of missing files kept, offline or over the cap.
    offline_roots: list[str] = field(default_factory=list)
    kept_missing: int = 0
    # Videos embedded by this run and the frames sampled from them; videos not read because the
    # `video` extra is missing (each is also a failure with the reason).
    videos: int = 0
    frames: int = 0
    videos_need_extra: int = 0
    # The second stage: the text read in photos (indexer.photo_text_stage); None when not asked for.
    photo_text: TextStageSummary | None = None
    facts_filled: int = 0  # unchanged photos whose facts (indexer.facts) this run read, without embedding them

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
            "skipped": dict(sorted(self.skipped.items())),
            "offline_roots": list(self.offline_roots),
            "kept_missing": self.kept_missing,
            "videos": self.videos,
            "frames": self.frames,
            "facts_filled": self.facts_filled,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            **({"photo_text": self.photo_text.as_dict()} if self.photo_text is not None else {}),
        }


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
        ray: RayOptions | None = None,
        start_method: StartMethod | None = None,
        prepare_search: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        first_batch_size: int = 4,
        signals: Sequence[Signal] = DEFAULT_SIGNALS,
        video: bool = True,
        read_text: bool = True,
        ocr: OcrConfig | None = None,
    ) -> None:
        """ray: embed on a Ray cluster (see indexer.distributed) instead of in this process.
        first_batch_size: the run's first batch is this small, so that its first photos are embedded
        (and shown) within a second or two of the start instead of after a whole batch's decoding.
        signals: what is stored per photo (indexer.signals); the embedding by default.
        video: read videos (sampled frames, indexer.videos); False reports them as not read.
        read_text: after the embedding, read the text in the photos not read yet (a second stage:
        indexer.photo_text_stage; needs the ocr extra, else the summary's photo_text.note says so)."""
        self.limits = limits
        self.video = video
        self.read_text = read_text
        self._ocr_config = ocr
        self._reader: TextReader | None = None
        self.signals = tuple(signals)
        self.index_dir = index_dir
        self.db_url = db_url
        self._model = model
        self.ray = ray
        # a model given by spec is loaded by each Ray actor on its own device; an object is shipped
        self._ship_spec = model is None or isinstance(model, str)
        self._last_save = 0.0
        self._videos_inside: list[Work] = []
        self.batch_size = batch_size
        self.first_batch_size = max(1, min(first_batch_size, batch_size))
        self.workers = workers or max(1, (os.cpu_count() or 2))
        self.start_method = start_method  # of the decode workers; None: default_start_method()
        # After a run that embedded photos: export the query encoders and embed the caption bank
        # (indexer.preparation), once per model and machine; False leaves that to the first search.
        self.prepare_search = prepare_search
        self._load_seconds = 0.0
        self.on_progress = on_progress

    @property
    def model(self) -> EmbeddingModel | None:
        """The model once a run has loaded it (or the one given)."""
        return None if self._model is None or isinstance(self._model, str) else self._model

    def _check_model(self, store: IndexStore) -> None:
        """Refuse another model than the index's before anything is loaded or written."""
        recorded = store.model_spec
        given = self.model
        if given is None and recorded:  # compared by spec: nothing is loaded for a run with nothing new
            check_model_matches(store, self._model if isinstance(self._model, str) else recorded)
            return
        model = given if given is not None else self._load(store)  # a new index: the model asked for, or the default
        store.check_model(str(model.spec), model.dim, model_fingerprint(model.spec))  # records it, or compares

    def _load(self, store: IndexStore) -> EmbeddingModel:
        """The model, loaded on first need: a run with nothing new to embed never loads it."""
        if self.model is None:
            from xmodal.indexer.models.deferred import load_for_indexing

            clock = time.perf_counter()
            self._model = load_for_indexing(self._model if isinstance(self._model, str) else store.model_spec)
            self._load_seconds = time.perf_counter() - clock  # the run's summary shows it as timings["load"]
        return self._model  # type: ignore[return-value]

    def add_paths(
        self,
        paths: Iterable[Path | str],
        listing: Iterable[FoundFile | SkippedFile] | None = None,
        *,
        prune_missing: bool = False,
    ) -> IndexSummary:
        """Index every photo under the paths; returns the run's summary.

        listing: the files to index instead of a walk of the paths (indexer.listing.read_listing);
        the paths then only say where files that left the listing are removed (or moved from).
        The run itself is `add_from` with the source these make (indexer.sources).
        """
        source: Source = FolderWalk.of(paths) if listing is None else ListedFiles.of(listing, paths)
        return self.add_from(source, prune_missing=prune_missing)

    def add_from(self, source: Source, *, prune_missing: bool = False) -> IndexSummary:
        """Index the files a source yields (indexer.sources); returns the run's summary.

        Rows of missing files are removed only while that is plainly a user's deletion: the rows
        under an offline root (not there, or empty: indexer.roots) are kept, and so is every missing
        row when more than `limits.max_missing_share` of the index is missing; the summary says so
        (`offline_roots`, `kept_missing`). prune_missing=True removes them all, offline roots too.
        """
        started = time.perf_counter()
        self._load_seconds = 0.0
        store = IndexStore.open(self.index_dir, self.db_url, create=True)
        opened = time.perf_counter() - started  # a new index: its schema made (once per index)
        try:
            with store.write_lock():
                self._check_model(store)
                summary = self._run(store, source, prune_missing)
                summary.timings["open"] = opened
                store.save_vectors()  # search works on the new photos from here on
                if self.read_text:
                    summary.photo_text = self._read_texts(store)
                    summary.timings["text"] = summary.photo_text.seconds
        finally:
            store.close()
        summary.seconds = time.perf_counter() - started
        if self._load_seconds:
            summary.timings["load"] = self._load_seconds
        if summary.embedded and self.model is not None and self.prepare_search:
            # What a search of this index needs (query encoders, the caption bank), made now while
            # the model is loaded; once per model and machine, outside the run's own time.
            from xmodal.indexer.preparation import prepare_for_search

            clock = time.perf_counter()
            prepare_for_search(self.model, self._report_stage)
            summary.timings["prepare"] = time.perf_counter() - clock
        return summary

    def _read_texts(self, store: IndexStore) -> TextStageSummary:
        """The second stage: the text in every photo without a reading (indexer.photo_text_stage)."""
        from xmodal.indexer.photo_text import ocr_unavailable

        missing = ocr_unavailable()
        if missing is not None:
            return TextStageSummary(note=missing)
        from xmodal.indexer.photo_text_stage import read_unread_photos

        if self._reader is None:
            self._reader = TextReader(self._ocr_config, self.limits)
        return read_unread_photos(store, self._reader, self.on_progress)

    def remove_paths(self, paths: Iterable[Path | str]) -> int:
        """Remove the index's photos at or under the paths, whether or not their files exist (the
        one way, besides prune_missing, to drop an offline root's rows); returns how many."""
        targets = [str(absolute(p)) for p in paths]
        if not targets:
            return 0
        store = IndexStore.open(self.index_dir, self.db_url)
        try:
            with store.write_lock():
                with store.metadata.session() as s, s.begin():
                    ids = list(s.scalars(select(ImageRow.id).where(under_clause(ImageRow.path, targets))))
                    store.metadata.delete_ids(ImageRow, ids, s)
                    s.execute(delete(FailureRow).where(under_clause(FailureRow.path, targets)))
                    forget_roots(store.metadata, s, targets)
                if ids and store.dim:
                    self._forget(store, ids)
                    store.save_vectors()
        finally:
            store.close()
        return len(ids)

    def _report_stage(self, stage: str, done: int, total: int) -> None:
        if self.on_progress:
            self.on_progress(Progress(done, total, stage))

    # --- the run ----------------------------------------------------------------------------
    def _run(
        self,
        store: IndexStore,
        source: Source,
        prune_missing: bool = False,
    ) -> IndexSummary:
        summary = IndexSummary()
        clock = time.perf_counter()
        roots = list(source.roots)
        found: list[FoundFile] = []
        skipped: list[SkippedFile] = []
        kept_videos: set[str] = set()  # videos this run does not read: their rows stay as they are
        no_video = None if self.video else "--no-video"
        for item in source:
            if isinstance(item, FoundFile) and item.media == "video":
                no_video = no_video or video_support()
                if no_video is not None:
                    kept_videos.add(str(item.path))
                    if self.video:  # the extra is missing: a failure with the reason (xmodal info --errors)
                        skipped.append(SkippedFile(item.path, no_video))
                        summary.videos_need_extra += 1
                    else:
                        skipped.append(video_not_read(item))
                    continue
            if isinstance(item, FoundFile):
                found.append(item)
            else:
                skipped.append(item)
        summary.timings["scan"] = time.perf_counter() - clock

        clock = time.perf_counter()
        files, others = _split_roots(roots)
        # A root that is not there or is empty (an unmounted drive, a typo) removes nothing unless
        # asked to: only roots that are online can say which of their files are gone.
        offline = {} if prune_missing else _offline_roots(store, others)
        summary.offline_roots = list(offline)
        summary.kept_missing = sum(offline.values())  # every photo under them is kept, present or not
        skipped = [item for item in skipped if str(item.path) not in offline]  # offline, not failed
        folders = list(others) if prune_missing else [r for r in others if os.path.isdir(r) and r not in offline]
        existing = {row.path: row for row in store.metadata.image_rows_under(folders)} if folders else {}
        existing.update((row.path, row) for row in store.metadata.image_rows_at(files))
        seen_paths = {str(f.path) for f in found} | kept_videos
        if source.names_files:  # named files outside the roots are compared too (never removed)
            existing.update((row.path, row) for row in store.metadata.image_rows_under([]) if row.path in seen_paths)
        missing = {path: row for path, row in existing.items() if path not in seen_paths}
        if offline:  # a folder root inside the run's may be offline on its own (a drive mounted there)
            kept = [p for p in missing if any(is_inside(p, root) for root in offline)]
            for path in kept:
                del missing[path]
        missing_by_hash: dict[str, list[ImageRow]] = {}
        for gone in missing.values():
            missing_by_hash.setdefault(gone.content_hash, []).append(gone)

        # Unchanged photos a signal lacks (e.g. tower features of an older run) are computed again.
        stale: set[int] = set().union(*(signal.stale_ids(store) for signal in self.signals))
        work: list[Work] = []
        moves: list[tuple[ImageRow, FoundFile]] = []
        for f in found:
            row = existing.get(str(f.path))
            if row is not None and row.size == f.size and row.mtime_ns == f.mtime_ns and row.id not in stale:
                summary.unchanged += 1
                continue
            if row is not None:
                work.append(Work(f, row.id))
                continue
            if not missing_by_hash:  # nothing can have moved here: the decode workers hash it
                work.append(Work(f, None))
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
                work.append(Work(f, None, digest))
        summary.timings["compare"] = time.perf_counter() - clock

        if (
            missing
            and not prune_missing
            and len(missing) > self.limits.max_missing_share * store.metadata.count(ImageRow)
        ):
            summary.kept_missing += len(missing)  # a drive half gone, not a user's deletion: ask first
            missing = {}
        self._apply_moves_and_removals(store, moves, list(missing.values()), skipped, (files, others), summary)
        self._forget(store, [row.id for row in missing.values()])
        self._fill_facts(store, seen_paths, {w.row_id for w in work if w.row_id is not None}, summary)
        self._last_save = time.perf_counter()
        videos = [w for w in work if w.found.media == "video"]
        work = [w for w in work if w.found.media != "video"]
        self._videos_inside = []  # files named like pictures that the decoders found to be videos
        if work and self.ray is not None:
            from xmodal.indexer.distributed import embed_on_ray

            embed_on_ray(self, store, self._load(store), work, summary, self.ray, ship_spec=self._ship_spec)
        elif work:
            self._embed_all(store, self._load(store), work, summary)
        videos += self._videos_inside
        if videos and self.ray is not None:  # sampled in Ray tasks, embedded by the model actors
            from xmodal.indexer.distributed import embed_videos_on_ray

            embed_videos_on_ray(self, store, self._load(store), videos, summary, self.ray, ship_spec=self._ship_spec)
        elif videos:  # a video is one file's many frames, written in one transaction
            self._embed_videos(store, self._load(store), videos, summary)
        return summary

    def _fill_facts(self, store: IndexStore, present: set[str], redone: set[int], summary: IndexSummary) -> None:
        """Facts of photos indexed without them (an index made before facts, or by an older
        reader: indexer.facts.FACTS_VERSION), read from the files found by this run and written
        in batches; nothing is embedded again. Photos this run embeds again get theirs then."""
        clock = time.perf_counter()
        with store.metadata.session() as s:
            todo = [r for r in stale_facts(s) if r[1] in present and r[0] not in redone]
        if not todo:
            return
        done = 0
        for start in range(0, len(todo), _FACTS_BATCH):
            chunk = todo[start : start + _FACTS_BATCH]
            facts = [(row_id, read_facts(path, mtime_ns, taken)) for row_id, path, mtime_ns, taken in chunk]
            with store.metadata.session() as s, s.begin():
                # a row deleted meanwhile by no one (we hold the write lock); still, only rows there
                there = set(s.scalars(select(ImageRow.id).where(ImageRow.id.in_([i for i, _ in facts]))))
                write_facts(s, [(i, f) for i, f in facts if i in there])
            done += len(chunk)
            summary.facts_filled = done
            self._report_stage("facts", done, len(todo))
        summary.timings["facts"] = summary.timings.get("facts", 0.0) + time.perf_counter() - clock

    def _apply_moves_and_removals(
        self,
        store: IndexStore,
        moves: list[tuple[ImageRow, FoundFile]],
        removed: list[ImageRow],
        skipped: list[SkippedFile],
        roots: tuple[list[str], list[str]],
        summary: IndexSummary,
    ) -> None:
        """roots: (files named one by one, the other roots), as _split_roots gives them."""
        now = utcnow()
        with store.metadata.session() as s, s.begin():
            for row, f in moves:
                s.query(ImageRow).filter(ImageRow.id == row.id).update(
                    {"path": str(f.path), "size": f.size, "mtime_ns": f.mtime_ns, "indexed_at": now}
                )
            rename_facts(s, [(row.id, str(f.path)) for row, f in moves])
            store.metadata.delete_ids(ImageRow, [row.id for row in removed], s)
            # Failures under these roots are re-decided by this run (a listing may come without roots:
            # an empty or_() would match every failure).
            named, others = roots
            if others:
                s.execute(delete(FailureRow).where(under_clause(FailureRow.path, others)))
            for start in range(0, len(named), 500):  # bound the bind parameters per statement
                s.execute(delete(FailureRow).where(FailureRow.path.in_(named[start : start + 500])))
            for item in skipped:
                s.merge(FailureRow(path=str(item.path), reason=item.reason, failed_at=now))
            if moves:  # paths changed; removals move the generation on themselves; nothing else does
                store.metadata.bump_generation(s, "image")
            remember_roots(store.metadata, s, [r for r in others if os.path.isdir(r) and not looks_offline(r)])
        summary.moved = len(moves)
        summary.removed = len(removed)
        failed = [item for item in skipped if item.unread is None]  # the rest are kinds not read
        summary.failed += len(failed)
        summary.failures.extend((str(item.path), item.reason) for item in failed)
        for item in skipped:
            if item.unread is not None:
                summary.skipped[item.unread] = summary.skipped.get(item.unread, 0) + 1

    def _embed_all(self, store: IndexStore, model: EmbeddingModel, work: list[Work], summary: IndexSummary) -> None:
        from xmodal.indexer.preparation import with_exported_image_path

        model = with_exported_image_path(model, self._report_stage)
        target = model.preprocessing.size if model.preprocessing is not None else decode_size(model.image_transform)
        split = model.pixel_split()
        if self._ship_spec:  # loaded here, not the caller's: later runs of this Indexer reuse the export
            self._model = model
        timings = {"decode": 0.0, "embed": 0.0}

        def embedded_batches(pool: Executor) -> Iterator[EmbeddedBatch]:
            """This process's source of embedded batches: the decode pool, then the model."""
            for batch in prefetch(pool, work, self.batch_size, first_batch_size=self.first_batch_size):
                good = [p for p in batch if p.error is None]
                timings["decode"] += sum(p.seconds for p in batch) / self.workers
                clock = time.perf_counter()
                pixels = [p.pixels for p in good if p.pixels is not None]
                embedded = model.embed_pixels_for_index(split.per_batch(pixels)) if good else None
                timings["embed"] += time.perf_counter() - clock
                yield batch, good, embedded

        with decode_pool(
            self.workers, split.per_image, target, self.start_method, self.limits.max_pixels, self.limits
        ) as pool:
            self.write_loop(store, model, embedded_batches(pool), len(work), summary)
        summary.timings.update(timings)

    def _embed_videos(self, store: IndexStore, model: EmbeddingModel, work: list[Work], summary: IndexSummary) -> None:
        """Videos one at a time in order, each written in its own transaction: a killed run loses at
        most the video in flight. Their frames come from decoder children (indexer.video_decoders)
        as they are sampled and are embedded _VIDEO_BATCH at a time meanwhile; the next videos are
        decoded ahead by the other children."""
        from xmodal.indexer.preparation import with_exported_image_path
        from xmodal.indexer.video_decoders import VideoDecoders

        model = with_exported_image_path(model, self._report_stage)
        target = model.preprocessing.size if model.preprocessing is not None else decode_size(model.image_transform)
        split = model.pixel_split()
        if self._ship_spec:
            self._model = model
        timings = {"video_decode": 0.0, "video_embed": 0.0, "video_write": 0.0}
        if self.on_progress:
            self.on_progress(Progress(0, len(work), "videos"))
        count = max(1, min(self.workers, len(work)))
        with VideoDecoders(count, split.per_image, target, self.limits, self.start_method) as decoders:
            for done, streamed in enumerate(decoders.stream(work), start=1):
                times: list[float] = []
                batch: list = []
                parts: list[IndexedPixels] = []
                clock = time.perf_counter()
                for t, pixels in streamed.frames():
                    times.append(t)
                    batch.append(pixels)
                    if len(batch) == _VIDEO_BATCH:
                        parts.append(model.embed_pixels_for_index(split.per_batch(batch)))
                        batch = []
                if batch:
                    parts.append(model.embed_pixels_for_index(split.per_batch(batch)))
                timings["video_decode"] += streamed.waited  # the wait for the decoder
                timings["video_embed"] += time.perf_counter() - clock - streamed.waited
                result = streamed.result
                video = PreparedVideo(
                    streamed.work,
                    times=times,
                    width=result.width,
                    height=result.height,
                    taken_at=result.taken_at,
                    complete=result.complete,
                    error=result.error or (None if times else "no frame decoded"),
                )
                if result.content_hash is not None:
                    video.work.content_hash = result.content_hash
                embedded = _joined(parts) if times and video.error is None else None
                clock = time.perf_counter()
                self._write_video(store, model, video, embedded, summary)
                timings["video_write"] += time.perf_counter() - clock
                if self.on_progress:
                    self.on_progress(Progress(done, len(work), "videos"))
        for stage, seconds in timings.items():
            summary.timings[stage] = summary.timings.get(stage, 0.0) + seconds

    def _write_video(
        self,
        store: IndexStore,
        model: EmbeddingModel,
        video: PreparedVideo,
        embedded: IndexedPixels | None,
        summary: IndexSummary,
    ) -> None:
        """One transaction for one video: its `images` row (media 'video'; the vector and other
        signals of its most typical frame), its frames (those of an earlier version replaced), or
        its failure. Then each signal follows (the FAISS caches)."""
        from xmodal.indexer.models.embedding import IndexedPixels

        f, row_id = video.work.found, video.work.row_id
        now = utcnow()
        item_id: int | None = None
        present = False
        with store.metadata.session() as s, s.begin():
            store.metadata.bump_generation(s, "image")
            if row_id is not None:
                present = s.get(ImageRow, row_id) is not None
            if embedded is None:
                if present:  # a changed file that no longer decodes loses its row (and frames)
                    store.metadata.delete_ids(ImageRow, [row_id], s)  # type: ignore[list-item]
                s.merge(FailureRow(path=str(f.path), reason=video.error or "no frame decoded", failed_at=now))
                summary.failed += 1
                summary.failures.append((str(f.path), video.error or "no frame decoded"))
            else:
                typical = typical_frame(embedded.vectors)
                values: dict[str, object] = {}
                for signal in self.signals:
                    values.update(signal.row_values(embedded, typical))
                row = dict(
                    path=str(f.path),
                    size=f.size,
                    mtime_ns=f.mtime_ns,
                    content_hash=video.work.content_hash or "",
                    width=video.width,
                    height=video.height,
                    taken_at=video.taken_at,
                    model=str(model.spec),
                    indexed_at=now,
                    media="video",
                    **values,
                )
                if present:
                    item_id = row_id
                    store.metadata.update_rows(s, ImageRow, [{"id": row_id, **row}])
                    old = list(s.scalars(select(FrameRow.id).where(FrameRow.item_id == row_id)))
                    store.metadata.delete_ids(FrameRow, old, s)
                    summary.updated += 1
                else:
                    item_id = store.metadata.insert_rows(s, ImageRow, [row])[0]
                    summary.new += 1
                frames = [
                    {"item_id": item_id, "time": float(t), "vector": vector_to_blob(v)}
                    for t, v in zip(video.times, embedded.vectors)
                ]
                store.metadata.insert_rows(s, FrameRow, frames)
                write_facts(s, [(int(item_id), read_facts(f.path, f.mtime_ns, _moment(video.taken_at)))])  # type: ignore[arg-type]
                summary.videos += 1
                summary.frames += len(frames)
        if embedded is None:
            self._forget(store, [row_id] if present and row_id is not None else [])
            return
        typical_only = IndexedPixels(
            embedded.vectors[typical : typical + 1],
            None if embedded.tower_features is None else embedded.tower_features[typical : typical + 1],
        )
        replaced = np.array([row_id] if present else [], dtype=np.int64)
        for signal in self.signals:
            signal.after_commit(store, np.array([item_id], dtype=np.int64), replaced, typical_only)
        if time.perf_counter() - self._last_save > _SAVE_INTERVAL_S:
            store.save_vectors()
            self._last_save = time.perf_counter()

    def write_loop(
        self,
        store: IndexStore,
        model: EmbeddingModel,
        batches: Iterable[EmbeddedBatch],
        total: int,
        summary: IndexSummary,
    ) -> None:
        """The one write loop of a run, whatever made the embedded batches (this process's decode
        pool and model, a Ray cluster): each is committed in order (commit_batch) and reported
        through on_progress. `timings["write"]` is the time spent here. Under the run's write lock."""
        done = 0
        summary.timings.setdefault("write", 0.0)
        if self.on_progress:
            self.on_progress(Progress(0, total))
        for batch, good, embedded in batches:
            clock = time.perf_counter()
            size = len(batch)
            if self.video and any(_video_inside(p) for p in batch) and video_support() is None:
                # named like a picture, a video by content: read as one after the photos (_run)
                self._videos_inside += [_as_video(p.work) for p in batch if _video_inside(p)]
                batch = [p for p in batch if not _video_inside(p)]
            self.commit_batch(store, model, batch, good, embedded, summary)
            summary.timings["write"] += time.perf_counter() - clock
            done += size
            if self.on_progress:
                self.on_progress(Progress(done, total))

    def commit_batch(
        self,
        store: IndexStore,
        model: EmbeddingModel,
        batch: list[Prepared],
        good: list[Prepared],
        embedded: IndexedPixels | None,
        summary: IndexSummary,
    ) -> None:
        """The one write loop's step, whatever decoded and embedded the batch (this process's decode
        pool, Ray): the batch's SQL transaction, then the FAISS cache, saved at most every
        _SAVE_INTERVAL_S (SQL holds every finished batch anyway). Called under the run's write lock."""
        ids = self._write_batch(store, model, batch, good, embedded, summary)
        if embedded is not None:
            replaced = np.array([p.work.row_id for p in good if p.work.row_id is not None], dtype=np.int64)
            for signal in self.signals:
                signal.after_commit(store, np.array(ids, dtype=np.int64), replaced, embedded)
        if time.perf_counter() - self._last_save > _SAVE_INTERVAL_S:
            store.save_vectors()
            self._last_save = time.perf_counter()

    def _write_batch(
        self,
        store: IndexStore,
        model: EmbeddingModel,
        batch: list[Prepared],
        good: list[Prepared],
        embedded: IndexedPixels | None,
        summary: IndexSummary,
    ) -> list[int]:
        """One transaction for the whole batch: rows, vectors, failures and the new generation.

        New rows go in with one multi-row INSERT … RETURNING and changed ones with one
        executemany UPDATE (SQLite and PostgreSQL alike); `timings["sql"]` is this part alone."""
        clock = time.perf_counter()
        # Each file's facts from its header (a video's time from its decoder: prepared.taken_at),
        # read before the transaction so the database is held no longer than the writes take.
        facts = [
            read_facts(p.work.found.path, p.work.found.mtime_ns, _moment(p.taken_at))
            for p in (good if embedded is not None else [])
        ]
        summary.timings["facts"] = summary.timings.get("facts", 0.0) + time.perf_counter() - clock
        clock = time.perf_counter()
        now = utcnow()
        spec = str(model.spec)
        rows: list[dict] = []
        if embedded is not None:  # None: nothing of the batch decoded
            for position, prepared in enumerate(good[: len(embedded.vectors)]):
                f = prepared.work.found
                values: dict[str, object] = {}
                for signal in self.signals:  # the columns each signal stores for this item
                    values.update(signal.row_values(embedded, position))
                rows.append(
                    dict(
                        path=str(f.path),
                        size=f.size,
                        mtime_ns=f.mtime_ns,
                        content_hash=prepared.work.content_hash or "",
                        width=prepared.width,
                        height=prepared.height,
                        taken_at=prepared.taken_at,
                        model=spec,
                        indexed_at=now,
                        media="photo",
                        **values,
                    )
                )
        with store.metadata.session() as s, s.begin():
            store.metadata.bump_generation(s, "image")  # this batch moves the generation on, even with no rows
            replacing = [p.work.row_id for p in good if p.work.row_id is not None]
            present = set(s.scalars(select(ImageRow.id).where(ImageRow.id.in_(replacing)))) if replacing else set()
            updates = [{"id": p.work.row_id, **row} for p, row in zip(good, rows) if p.work.row_id in present]
            inserts = [row for p, row in zip(good, rows) if p.work.row_id not in present]
            store.metadata.update_rows(s, ImageRow, updates)
            if updates:  # a file that was a video and is now a photo: its frames go
                was_video = [u["id"] for u in updates]
                frames = list(s.scalars(select(FrameRow.id).where(FrameRow.item_id.in_(was_video))))
                store.metadata.delete_ids(FrameRow, frames, s)
            new_ids = iter(store.metadata.insert_rows(s, ImageRow, inserts))
            ids = [p.work.row_id if p.work.row_id in present else next(new_ids) for p in good]
            write_facts(s, list(zip(ids, facts)))
            summary.updated += len(updates)
            summary.new += len(inserts)
            # a changed file that no longer decodes loses its row
            store.metadata.delete_ids(
                ImageRow, [p.work.row_id for p in batch if p.error is not None and p.work.row_id is not None], s
            )
            for prepared in batch:
                if prepared.error is not None:
                    path = str(prepared.work.found.path)
                    s.merge(FailureRow(path=path, reason=prepared.error, failed_at=now))
                    unread = unread_extension(prepared.error, path)  # its content is RAW or video
                    if unread is not None:
                        summary.skipped[unread] = summary.skipped.get(unread, 0) + 1
                        continue
                    summary.failed += 1
                    summary.failures.append((path, prepared.error))
        summary.timings["sql"] = summary.timings.get("sql", 0.0) + time.perf_counter() - clock
        self._forget(store, [p.work.row_id for p in batch if p.error is not None and p.work.row_id is not None])
        return ids

    def _forget(self, store: IndexStore, ids: Sequence[int]) -> None:
        """Rows removed (maybe none): each signal drops their derived data (the FAISS cache)."""
        for signal in self.signals:
            signal.forget(store, np.array(ids, dtype=np.int64))

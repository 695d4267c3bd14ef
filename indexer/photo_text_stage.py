"""The second stage of an indexing run: read the text in the photos and video frames that have no
reading by the current models yet.

It runs after the embedding (so search works on the new photos before their text is read), under
the run's write lock, and commits its readings a few photos at a time: a killed run keeps what it
read, and the next run (`xmodal index`, `xmodal watch`, the server's indexing) reads the rest. A
photo whose text cannot be read is stored with status "failed" and the reason; it never fails the
photo's indexing. Its own progress goes to the run's callback as the stage "reading the text in photos".

Each reading records the models that made it (indexer.photo_text `reading_models`): when they
change (a rapidocr that ships other models), every photo and frame is read again by the next run,
its older reading searchable until then. A video's sampled frames (the `frames` table) are read
like photos, each decoded again at its time (indexer.videos `frame_time`), at the resolution the
text needs. Photos are read `OcrConfig.parallel` at a time (threads sharing the models:
onnxruntime runs outside the GIL), in order, so a commit always holds the oldest readings.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from xmodal.indexer.photo_text import PhotoText, TextReader
from xmodal.indexer.progress import Progress
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.photo_texts import Unread, unread_items, write_readings

__all__ = ["TEXT_STAGE", "TextStageSummary", "read_all", "read_unread_photos"]

TEXT_STAGE = "reading the text in photos"
_COMMIT_PHOTOS = 16  # readings per transaction
_COMMIT_SECONDS = 2.0  # ... or fewer, when reading them took longer


@dataclass
class TextStageSummary:
    """What the text stage did: photos (and video frames) read, how many had text, how many failed (and why)."""

    read: int = 0
    with_text: int = 0
    failed: int = 0
    seconds: float = 0.0
    note: str | None = None  # why the stage did not run (the ocr extra is missing)
    failures: list[tuple[str, str]] | None = None
    frames: int = 0  # of `read`, frames of videos

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "read": self.read,
            "with_text": self.with_text,
            "failed": self.failed,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "photos_per_second": round(self.read / self.seconds, 2) if self.seconds > 0 else 0.0,
        }
        if self.note:
            out["note"] = self.note
        return out


def read_unread_photos(
    store: IndexStore,
    reader: TextReader,
    on_progress: Callable[[Progress], None] | None = None,
) -> TextStageSummary:
    """Read every photo and video frame of the index without a reading by the reader's models;
    commit as it goes. Under the write lock."""
    clock = time.perf_counter()
    summary = TextStageSummary(failures=[])
    engine = reader.engine_name or "rapidocr"
    with store.metadata.session() as s:
        todo = unread_items(s, engine)
    if on_progress and todo:  # a stage with nothing to do is not announced
        on_progress(Progress(0, len(todo), TEXT_STAGE))
    pending: list[tuple[int, float | None, PhotoText]] = []
    last_commit = time.perf_counter()
    for done, (item, reading) in enumerate(read_all(reader, todo), start=1):
        pending.append((item.item_id, item.frame_time, reading))
        summary.read += 1
        summary.frames += item.frame_time is not None
        summary.with_text += reading.status == "text"
        if reading.status == "failed":
            summary.failed += 1
            where = item.path if item.frame_time is None else f"{item.path} at {item.frame_time:.2f} s"
            summary.failures.append((where, reading.reason or "text not read"))  # type: ignore[union-attr]
        if len(pending) >= _COMMIT_PHOTOS or time.perf_counter() - last_commit > _COMMIT_SECONDS:
            _commit(store, pending, engine)
            pending = []
            last_commit = time.perf_counter()
        if on_progress:
            on_progress(Progress(done, len(todo), TEXT_STAGE))
    _commit(store, pending, engine)
    summary.seconds = time.perf_counter() - clock
    return summary


def _read_one(reader: TextReader, item: Unread) -> PhotoText:
    if item.frame_time is None:
        return reader.read(item.path)
    return reader.read_frame(item.path, item.frame_time)


def read_all(reader: TextReader, items: Iterable[Unread]) -> Iterator[tuple[Unread, PhotoText]]:
    """(item, reading) in the items' order, `reader.config.parallel` read at once."""
    workers = reader.config.parallel
    if workers <= 1:
        for item in items:
            yield item, _read_one(reader, item)
        return
    items = iter(items)
    first = next(items, None)
    if first is None:
        return
    try:
        reader.load()  # once, before the threads share them (the first photo is read in parallel too)
    except Exception:  # noqa: BLE001 - models that cannot load fail each reading, with the reason
        pass
    items = itertools.chain((first,), items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xmodal-ocr") as pool:
        window: deque[tuple[Unread, Future[PhotoText]]] = deque()
        for item in items:
            window.append((item, pool.submit(_read_one, reader, item)))
            if len(window) >= 2 * workers:
                first, future = window.popleft()
                yield first, future.result()
        while window:
            first, future = window.popleft()
            yield first, future.result()


def _commit(store: IndexStore, readings: list[tuple[int, float | None, PhotoText]], engine: str) -> None:
    if not readings:
        return
    from sqlalchemy import select

    from xmodal.indexer.store.schema import ImageRow

    with store.metadata.session() as s, s.begin():
        # a photo removed meanwhile (another process's `xmodal remove`) keeps no orphan reading
        present = set(s.scalars(select(ImageRow.id).where(ImageRow.id.in_(sorted({i for i, _, _ in readings})))))
        write_readings(s, [r for r in readings if r[0] in present], engine)

"""The second stage of an indexing run: read the text in the photos that have no reading yet.

It runs after the embedding (so search works on the new photos before their text is read), under
the run's write lock, and commits its readings a few photos at a time: a killed run keeps what it
read, and the next run (`xmodal index`, `xmodal watch`, the server's indexing) reads the rest. A
photo whose text cannot be read is stored with status "failed" and the reason; it never fails the
photo's indexing. Its own progress goes to the run's callback as the stage "reading the text in photos".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from xmodal.indexer.photo_text import PhotoText, TextReader
from xmodal.indexer.progress import Progress
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.photo_texts import unread_photos, write_texts

__all__ = ["TEXT_STAGE", "TextStageSummary", "read_unread_photos"]

TEXT_STAGE = "reading the text in photos"
_COMMIT_PHOTOS = 16  # readings per transaction
_COMMIT_SECONDS = 2.0  # ... or fewer, when reading them took longer


@dataclass
class TextStageSummary:
    """What the text stage did: photos read, how many had text, how many failed (and why)."""

    read: int = 0
    with_text: int = 0
    failed: int = 0
    seconds: float = 0.0
    note: str | None = None  # why the stage did not run (the ocr extra is missing)
    failures: list[tuple[str, str]] | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "read": self.read,
            "with_text": self.with_text,
            "failed": self.failed,
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
    """Read every photo of the index without a reading; commit as it goes. Under the write lock."""
    clock = time.perf_counter()
    summary = TextStageSummary(failures=[])
    with store.metadata.session() as s:
        todo = unread_photos(s)
    if on_progress and todo:  # a stage with nothing to do is not announced
        on_progress(Progress(0, len(todo), TEXT_STAGE))
    pending: list[tuple[int, PhotoText]] = []
    last_commit = time.perf_counter()
    for done, (item_id, path) in enumerate(todo, start=1):
        reading = reader.read(path)
        pending.append((item_id, reading))
        summary.read += 1
        summary.with_text += reading.status == "text"
        if reading.status == "failed":
            summary.failed += 1
            summary.failures.append((path, reading.reason or "text not read"))  # type: ignore[union-attr]
        if len(pending) >= _COMMIT_PHOTOS or time.perf_counter() - last_commit > _COMMIT_SECONDS:
            _commit(store, pending, reader.engine_name)
            pending = []
            last_commit = time.perf_counter()
        if on_progress:
            on_progress(Progress(done, len(todo), TEXT_STAGE))
    _commit(store, pending, reader.engine_name)
    summary.seconds = time.perf_counter() - clock
    return summary


def _commit(store: IndexStore, readings: list[tuple[int, PhotoText]], engine: str) -> None:
    if not readings:
        return
    from sqlalchemy import select

    from xmodal.indexer.store.schema import ImageRow

    with store.metadata.session() as s, s.begin():
        # a photo removed meanwhile (another process's `xmodal remove`) keeps no orphan reading
        present = set(s.scalars(select(ImageRow.id).where(ImageRow.id.in_([i for i, _ in readings]))))
        write_texts(s, [(i, r) for i, r in readings if i in present], engine or "rapidocr")

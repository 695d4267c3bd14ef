"""Indexing text corpora (captions, product descriptions, tags) into the same space as the photos."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from xmodal.indexer.models.embedding import EmbeddingModel, load_model
from xmodal.indexer.models.spec import model_fingerprint
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.model_check import check_model_matches
from xmodal.indexer.store.schema import TextRow, utcnow, vector_to_blob
from xmodal.indexer.text_sources import read_text_items

__all__ = ["TextSummary", "TextIndexer", "text_hash"]


@dataclass
class TextSummary:
    new: int = 0
    unchanged: int = 0
    removed: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "new": self.new,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "seconds": round(self.seconds, 3),
        }


def text_hash(text: str) -> str:
    """What a text row is keyed by within its source (an import keys its texts the same way)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class TextIndexer:
    """Adds texts, grouped by source (a file path or any label); re-running a source is incremental."""

    def __init__(
        self,
        index_dir: Path | str | None = None,
        model: EmbeddingModel | str | None = None,
        db_url: str | None = None,
        batch_size: int = 256,
    ) -> None:
        self.index_dir = index_dir
        self.db_url = db_url
        self._model = model
        self.batch_size = batch_size

    def add_files(
        self, files: Iterable[Path | str], column: str | None = None, field: str | None = None
    ) -> TextSummary:
        entries: list[tuple[str, str]] = []
        for file in files:
            source = str(Path(file).expanduser().absolute())
            entries.extend((source, item) for item in read_text_items(file, column, field))
        return self.add_texts(entries, replace_sources=True)

    def add_texts(self, entries: Sequence[tuple[str, str]], replace_sources: bool = True) -> TextSummary:
        """Index (source, text) entries. With replace_sources, texts of these sources not given again leave."""
        started = time.perf_counter()
        summary = TextSummary()
        store = IndexStore.open(self.index_dir, self.db_url, create=True)
        try:
            with store.write_lock():
                if isinstance(self._model, str):  # by spec, before loading it
                    check_model_matches(store, self._model)
                model = (
                    self._model
                    if isinstance(self._model, EmbeddingModel)
                    else load_model(self._model or store.model_spec)
                )
                store.check_model(str(model.spec), model.dim, model_fingerprint(model.spec))  # records it, or compares
                vectors = store.vectors("text")
                sources = {source for source, _ in entries}
                with store.metadata.session() as s:
                    existing = s.execute(
                        select(TextRow.id, TextRow.source, TextRow.content_hash).where(TextRow.source.in_(sources))
                    ).all()
                known = {(row.source, row.content_hash): row.id for row in existing}
                wanted: dict[tuple[str, str], str] = {}
                for source, text in entries:
                    wanted.setdefault((source, text_hash(text)), text)
                fresh = [(key, text) for key, text in wanted.items() if key not in known]
                summary.unchanged = len(wanted) - len(fresh)
                stale = [row_id for key, row_id in known.items() if key not in wanted] if replace_sources else []
                if stale:
                    with store.metadata.session() as s, s.begin():
                        store.metadata.delete_ids(TextRow, stale, s)
                        store.metadata.bump_generation(s, "text")
                    vectors.remove(np.array(stale, dtype=np.int64))
                    summary.removed = len(stale)
                for start in range(0, len(fresh), self.batch_size):
                    batch = fresh[start : start + self.batch_size]
                    embeddings = model.embed_texts([text for _, text in batch])
                    now = utcnow()
                    with store.metadata.session() as s, s.begin():
                        rows = [
                            dict(
                                source=source,
                                text=text,
                                content_hash=digest,
                                model=str(model.spec),
                                indexed_at=now,
                                vector=vector_to_blob(vec),
                            )
                            for ((source, digest), text), vec in zip(batch, embeddings)
                        ]
                        ids = np.array(store.metadata.insert_rows(s, TextRow, rows), dtype=np.int64)
                    vectors.add(ids, embeddings)
                    summary.new += len(batch)
                store.save_vectors()
        finally:
            store.close()
        summary.seconds = time.perf_counter() - started
        return summary

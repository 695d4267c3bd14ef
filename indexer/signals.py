"""Per-item signals: what an indexing run stores for each item, and how `check` and `info` know it.

A signal is one kind of fact kept per indexed item. Today there is one, the embedding
(`EmbeddingSignal`): the item's unit vector in the model's space, kept in SQL (the source of
truth) with a FAISS cache built from it, and, for a model that has them (the offline default),
the tower features the learned reranker reads. Every part of xmodal that touches per-item facts
goes through the signals it is given (default: `DEFAULT_SIGNALS`):

* the run (`Indexer`, indexer.indexing): `stale_ids` says which unchanged files must be computed
  again; `row_values` gives the SQL columns of one item of a batch, written in the batch's
  transaction; `after_commit` and `forget` keep the signal's derived data (the FAISS cache) in
  step with rows written, replaced and removed;
* `check` (indexer.store.checking): `inspect` adds the signal's problems to the report (the
  stored values against the derived data), `rebuild` mends the derived data from SQL on repair;
* `info` (search.stats.index_info): `info` counts what the index holds of the signal.

What a signal reads for a batch is the model's output for it (`IndexedPixels`: vectors and tower
features, computed in one pass by this process's decode pool or by Ray actors). A next signal
(text in photos, facts such as faces or places) implements the same protocol: its columns (or a
table of its own, added by a numbered migration), its derived index if it has one, its checks
and its counts; what computes its values joins the model's pass over the decoded batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
from sqlalchemy import func, select

from xmodal.indexer.facts import FactsSignal
from xmodal.indexer.store.index_store import IndexStore, Kind
from xmodal.indexer.store.schema import FrameRow, ImageRow, TextRow, features_to_blob, vector_to_blob
from xmodal.indexer.store.vector_index import VectorIndex

if TYPE_CHECKING:
    from xmodal.indexer.models.embedding import IndexedPixels
    from xmodal.indexer.store.checking import CheckReport

__all__ = ["Signal", "EmbeddingSignal", "FrameSignal", "PhotoTextSignal", "DEFAULT_SIGNALS"]

_TABLES: dict[Kind, type[ImageRow] | type[TextRow]] = {"image": ImageRow, "text": TextRow}
# Stored vectors are L2-normalised; anything further off than this was not written by a model.
_NORM_TOLERANCE = 1e-3
_VALUE_TOLERANCE = 1e-5


class Signal(Protocol):
    """One per-item fact that the run writes, `check` verifies and `info` counts."""

    @property
    def name(self) -> str:
        """A short name (the key of its counts in `index_info`)."""
        ...

    def stale_ids(self, store: IndexStore) -> set[int]:
        """Rows of unchanged files whose value of this signal is missing or outdated: the run
        computes them again."""
        ...

    def row_values(self, computed: IndexedPixels, position: int) -> dict[str, object]:
        """The SQL columns of the batch's item at `position`, from the model's output for the batch."""
        ...

    def after_commit(self, store: IndexStore, ids: np.ndarray, replaced: np.ndarray, computed: IndexedPixels) -> None:
        """After the batch's transaction: its rows `ids` (in the order of `computed`) hold new
        values; `replaced` are the ids of rows that held older ones."""
        ...

    def forget(self, store: IndexStore, ids: np.ndarray) -> None:
        """Rows removed (files gone, a file that no longer decodes): drop their derived data."""
        ...

    def inspect(self, store: IndexStore, report: CheckReport) -> None:
        """Add this signal's problems and notes to a `check` report."""
        ...

    def rebuild(self, store: IndexStore) -> list[str]:
        """Mend the signal's derived data from SQL (`check --repair`); what was done."""
        ...

    def info(self, store: IndexStore) -> dict[str, int]:
        """What the index holds of this signal, counted."""
        ...


class EmbeddingSignal:
    """The embedding of each photo and text: a unit vector per row in SQL (`vector`), the FAISS
    caches made from them, and the photos' tower features (`features`) for a model that has them."""

    name = "embedding"

    def stale_ids(self, store: IndexStore) -> set[int]:
        """Photos indexed before the offline default stored its tower features: embedded again so
        the learned reranker (search.fusion) covers them too."""
        spec = store.model_spec
        if not spec:
            return set()
        from xmodal.indexer.models.spec import parse_model_spec

        if not parse_model_spec(spec).capabilities.tower_features:
            return set()
        return store.metadata.ids_without_features()

    def row_values(self, computed: IndexedPixels, position: int) -> dict[str, object]:
        features = computed.tower_features
        return {
            "vector": vector_to_blob(computed.vectors[position]),
            "features": features_to_blob(features[position]) if features is not None else None,
        }

    def after_commit(self, store: IndexStore, ids: np.ndarray, replaced: np.ndarray, computed: IndexedPixels) -> None:
        vectors = store.vectors("image")
        vectors.remove(replaced)
        vectors.add(ids, computed.vectors)

    def forget(self, store: IndexStore, ids: np.ndarray) -> None:
        store.vectors("image").remove(ids)  # loaded even for none: the run saves it at its generation

    # --- check --------------------------------------------------------------------------------
    def inspect(self, store: IndexStore, report: CheckReport) -> None:
        """Rows of another model than the index's, unusable vectors (wrong length, not finite, not
        unit length), and each current FAISS cache against SQL: every row exactly one vector, same
        values, no vector without a row. A stale cache is a note: every open catches it up."""
        meta = store.metadata.get_meta()
        recorded = meta.get("model")
        dim = int(meta["dim"]) if meta.get("dim") else None
        for kind, table in _TABLES.items():
            with store.metadata.session() as s:
                rows = s.execute(select(table.id, table.vector, table.model).order_by(table.id)).all()
            models = {r[2] for r in rows}
            if recorded is None and rows:
                report.model_problems.append(
                    f"no model recorded, but {len(rows)} {kind} row(s) exist (models: {', '.join(sorted(models))})"
                )
            elif recorded is not None:
                other = [f"{kind}:{r[0]}" for r in rows if r[2] != recorded]
                if other:
                    report.model_problems.append(
                        f"{len(other)} {kind} row(s) were embedded by another model than '{recorded}'"
                    )
                    report.bad_vectors.extend(x for x in other if x not in report.bad_vectors)
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            blobs = [r[1] for r in rows]
            for row_id, blob in zip(ids, blobs):
                if _vector_problem(blob, dim) and f"{kind}:{row_id}" not in report.bad_vectors:
                    report.bad_vectors.append(f"{kind}:{row_id}")
            _compare_cache(store, kind, ids, blobs, dim, meta, report)

    def rebuild(self, store: IndexStore) -> list[str]:
        if not store.dim:
            return []
        for kind in _TABLES:
            store.rebuild_vectors(kind)
        store.save_vectors()
        return ["rebuilt the FAISS caches from SQL"]

    # --- info ---------------------------------------------------------------------------------
    def info(self, store: IndexStore) -> dict[str, int]:
        """Rows holding a vector (photos and texts), and photos holding tower features."""
        with store.metadata.session() as s:
            photos, features = s.execute(
                select(func.count(ImageRow.vector), func.count(ImageRow.features)).select_from(ImageRow)
            ).one()
            texts = s.scalar(select(func.count(TextRow.vector)).select_from(TextRow))
        return {"vectors": int(photos) + int(texts or 0), "tower_features": int(features)}


class FrameSignal:
    """The frames sampled from videos (indexer.videos): per video (an `images` row of media
    'video') its frames' times and vectors in `frames`, written with the video's row in one
    transaction, and the FAISS cache of them (frames.faiss), which follows SQL after each write
    (a video's frames go with its row, whoever deletes it)."""

    name = "frames"

    def stale_ids(self, store: IndexStore) -> set[int]:
        """Videos without a frame (none should be): sampled again."""
        with store.metadata.session() as s:
            framed = select(FrameRow.item_id).distinct()
            return set(s.scalars(select(ImageRow.id).where(ImageRow.media == "video", ImageRow.id.not_in(framed))))

    def row_values(self, computed: IndexedPixels, position: int) -> dict[str, object]:
        return {}  # frames are rows of their own, written with the video's (indexer.indexing)

    def after_commit(self, store: IndexStore, ids: np.ndarray, replaced: np.ndarray, computed: IndexedPixels) -> None:
        if store.metadata.generation("frame") or "frame" in store.held_kinds():
            store.follow_sql("frame")

    def forget(self, store: IndexStore, ids: np.ndarray) -> None:
        if len(ids) and (store.metadata.generation("frame") or "frame" in store.held_kinds()):
            store.follow_sql("frame")

    def inspect(self, store: IndexStore, report: CheckReport) -> None:
        """Frames of no video (their row gone), unusable frame vectors, and frames.faiss against SQL."""
        with store.metadata.session() as s:
            orphans = list(
                s.scalars(select(FrameRow.id).where(FrameRow.item_id.not_in(select(ImageRow.id))).order_by(FrameRow.id))
            )
            rows = s.execute(select(FrameRow.id, FrameRow.vector).order_by(FrameRow.id)).all()
        report.vectors_without_row.extend(f"frame:{i} of no video" for i in orphans)
        if not rows and store.metadata.generation("frame") == 0:
            return
        dim = store.dim
        for row_id, blob in rows:
            if _vector_problem(blob, dim):
                report.bad_vectors.append(f"frame:{row_id}")
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        _compare_cache(store, "frame", ids, [r[1] for r in rows], dim, store.metadata.get_meta(), report)

    def rebuild(self, store: IndexStore) -> list[str]:
        with store.metadata.session() as s, s.begin():
            orphans = list(s.scalars(select(FrameRow.id).where(FrameRow.item_id.not_in(select(ImageRow.id)))))
            store.metadata.delete_ids(FrameRow, orphans, s)
        done = [f"removed {len(orphans)} frame(s) of no video"] if orphans else []
        if store.dim and (store.metadata.generation("frame") or orphans):
            store.rebuild_vectors("frame")
            store.save_vectors()
            done.append("rebuilt the frames' FAISS cache from SQL")
        return done

    def info(self, store: IndexStore) -> dict[str, int]:
        """Videos and the frames sampled from them."""
        with store.metadata.session() as s:
            videos = s.scalar(select(func.count()).select_from(ImageRow).where(ImageRow.media == "video"))
            frames = s.scalar(select(func.count()).select_from(FrameRow))
        return {"videos": int(videos or 0), "frames": int(frames or 0)}


class PhotoTextSignal:
    """The text read in each photo (indexer.photo_text), in its own table (photo_texts). It is read
    in a second stage of the run (indexer.photo_text_stage), after the embedding, so it adds no
    columns here: a photo whose row is replaced or removed loses its reading (a video, its frames'),
    so the next reading stage reads it again; `check` verifies the readings and the database's text
    index on them, and `info` counts what was read."""

    name = "photo_text"

    def stale_ids(self, store: IndexStore) -> set[int]:
        return set()  # unread photos are the text stage's own work, not the embedding's

    def row_values(self, computed: IndexedPixels, position: int) -> dict[str, object]:
        return {}

    def after_commit(self, store: IndexStore, ids: np.ndarray, replaced: np.ndarray, computed: IndexedPixels) -> None:
        self.forget(store, replaced)

    def forget(self, store: IndexStore, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        from xmodal.indexer.store.photo_texts import delete_texts

        with store.metadata.session() as s, s.begin():
            delete_texts(s, [int(i) for i in ids])

    def inspect(self, store: IndexStore, report: CheckReport) -> None:
        """Readings of no photo or frame, unreadable or second readings, the text index out of step."""
        from xmodal.indexer.store.photo_texts import text_problems

        with store.metadata.session() as s:
            problems, notes = text_problems(s)
        report.text_problems.extend(problems)
        report.notes.extend(notes)

    def rebuild(self, store: IndexStore) -> list[str]:
        from xmodal.indexer.store.photo_texts import mend_texts

        with store.metadata.session() as s, s.begin():
            return mend_texts(s)

    def info(self, store: IndexStore) -> dict[str, int]:
        """Photos and frames read, with text, failed; and those left to read by the models here."""
        from xmodal.indexer.photo_text import reading_models
        from xmodal.indexer.store.photo_texts import text_counts

        with store.metadata.session() as s:
            return text_counts(s, reading_models())


# The embedding, the frames of videos, the facts of each photo (indexer.facts: when, where, camera, names) and its text.
DEFAULT_SIGNALS: tuple[Signal, ...] = (EmbeddingSignal(), FrameSignal(), FactsSignal(), PhotoTextSignal())


def _vector_problem(blob: bytes | None, dim: int | None) -> str | None:
    if blob is None or dim is None or len(blob) != 4 * dim:
        return "wrong length"
    vec = np.frombuffer(blob, dtype="<f4")
    if not np.all(np.isfinite(vec)):
        return "not finite"
    if abs(float(np.linalg.norm(vec)) - 1.0) > _NORM_TOLERANCE:
        return "not unit length"
    return None


def _compare_cache(
    store: IndexStore,
    kind: Kind,
    ids: np.ndarray,
    blobs: Sequence[bytes],
    dim: int | None,
    meta: dict[str, str],
    report: CheckReport,
) -> None:
    """The FAISS cache of one kind against its SQL rows, when the cache is the current one."""
    path = store.faiss_path(kind)
    generation = int(meta.get(f"generation:{kind}", "0"))
    if not dim:
        return
    stamp = VectorIndex.read_stamp(path)
    origin = meta.get("database_id")
    if stamp is not None and origin and stamp.get("origin", origin) != origin:
        report.stale_caches.append(f"{path.name}: made from another database; rebuilt from SQL on open")
        return
    loaded = VectorIndex.load(path, dim)
    if loaded is None:
        if os.path.exists(path) or len(ids):
            report.stale_caches.append(f"{path.name}: missing or unreadable, rebuilt from SQL on open")
        return
    index, stamped = loaded
    if stamped != generation:
        report.stale_caches.append(
            f"{path.name}: generation {stamped}, SQL is at {generation}; caught up from SQL on open"
        )
        return
    cached_ids, cached_vecs = index.vectors()
    if len(cached_ids) != len(ids):
        report.count_mismatches.append(f"{kind}: {len(ids)} in SQL, {len(cached_ids)} in {path.name}")
    unique, counts = np.unique(cached_ids, return_counts=True)
    report.vector_mismatches.extend(
        f"{kind}:{i} stored {c} times in {path.name}" for i, c in zip(unique, counts) if c > 1
    )
    sql_ids = set(int(i) for i in ids)
    cache_ids = set(int(i) for i in unique)
    report.rows_without_vector.extend(f"{kind}:{i}" for i in sorted(sql_ids - cache_ids))
    report.vectors_without_row.extend(f"{kind}:{i}" for i in sorted(cache_ids - sql_ids))
    by_id = {int(i): v for i, v in zip(cached_ids, cached_vecs)}
    for row_id, blob in zip(ids, blobs):
        cached = by_id.get(int(row_id))
        if cached is None or len(blob) != 4 * dim:
            continue
        if not np.allclose(cached, np.frombuffer(blob, dtype="<f4"), atol=_VALUE_TOLERANCE, rtol=0):
            report.vector_mismatches.append(f"{kind}:{row_id} differs between SQL and {path.name}")

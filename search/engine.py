"""The query engine: a query flows forward, parse → embed → candidates (FAISS) → second stage
(search.rerank.pipeline) → hits, and never comes back here between the steps."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image
from sqlalchemy import select

from xmodal.indexer.errors import ImageReadError, InvalidQueryError
from xmodal.indexer.images import decode_image
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits
from xmodal.indexer.store.index_store import IndexStore, Kind
from xmodal.indexer.store.model_check import check_model_matches
from xmodal.indexer.store.schema import ImageRow, TextRow
from xmodal.indexer.store.vector_index import VectorIndex
from xmodal.search.filters import SearchFilter
from xmodal.search.hits import Hit
from xmodal.search.query import QueryTerm, parse_query
from xmodal.search.rerank.pipeline import CandidateFeatures, Candidates, Ranked, SecondStage
from xmodal.search.rerank.qbnorm import QueryBanks
from xmodal.search.rerank.stages import RerankOptions, auto_score_floor

if TYPE_CHECKING:
    from xmodal.indexer.models.embedding import EmbeddingModel

__all__ = ["SearchEngine", "MinScore", "Query"]

# onnxruntime threads of one query encoder run: a short query gains little past two.
_QUERY_THREADS = max(1, min(2, os.cpu_count() or 1))
_TABLES: dict[str, type[ImageRow] | type[TextRow]] = {"image": ImageRow, "text": TextRow}
Query = str | Path | Image.Image | np.ndarray | Sequence[QueryTerm]
MinScore = float | Literal["auto"] | None


class SearchEngine:
    """Searches one index. Safe to share between threads: reads take no lock on the database.

    `limits` bound the work of one query: longer query texts are cut at `max_query_chars`, no list
    is ranked deeper than `max_depth` hits (asking for more returns at most that many)."""

    def __init__(self, store: IndexStore, model: EmbeddingModel | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self._model = model
        self.limits = limits
        self._lock = threading.RLock()
        self._light_encoders: dict[str, object] = {}  # exported query encoders; False when there is none
        # FAISS and the second stage's NumPy work run one search at a time: their thread pools
        # (OpenMP, BLAS) already use every core, and FAISS sets its OpenMP thread count for the
        # process; concurrent callers would only make those pools compete. Query embedding (onnxruntime,
        # per-session threads without spin-waiting), filters, SQL reads and the hits' rows stay concurrent.
        self._compute_lock = threading.Lock()
        self.store = store  # also builds the second stage (see the setter)

    @property
    def store(self) -> IndexStore:
        return self._store

    @store.setter
    def store(self, store: IndexStore) -> None:
        """Swap the index (a server follows another process's writes this way); the second stage
        follows, and what it keeps is keyed by generation, so nothing stale survives."""
        self._store = store
        self.second_stage = SecondStage(store, QueryBanks(store, self.embed_texts), compute=self._compute_lock)

    @property
    def uses_exported_encoders(self) -> bool:
        """Whether text queries run the exported ONNX path (the full model is not loaded)."""
        return self._light_encoder("text") is not None

    @classmethod
    def open(
        cls,
        index_dir: Path | str | None = None,
        model: EmbeddingModel | str | None = None,
        db_url: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> SearchEngine:
        """Open an existing index; the model defaults to the one the index was built with."""
        store = IndexStore.open(index_dir, db_url)
        try:  # by spec before anything is loaded; an index without a model yet matches any
            check_model_matches(store, model if model is not None else store.model_spec or "")
        except Exception:
            store.close()
            raise
        if isinstance(model, str):
            model = None  # loaded on first need: the index's, which is the one asked for
        return cls(store, model, limits)  # type: ignore[arg-type]

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> SearchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def model(self) -> EmbeddingModel:
        with self._lock:
            if self._model is None:
                if not self.store.model_spec:
                    raise InvalidQueryError(f"index '{self.store.directory}' is empty")
                from xmodal.indexer.models.embedding import load_model

                self._model = load_model(self.store.model_spec)
            return self._model

    # --- query vectors ----------------------------------------------------------------------
    def _light_encoder(self, kind: Kind) -> object:
        """The exported ONNX encoder of one kind (indexer.query_encoder) while the full model is
        not loaded; None when the model is loaded or there is no export."""
        if self._model is not None:
            return None
        with self._lock:
            if kind not in self._light_encoders:
                from xmodal.indexer.models.query_encoders import QueryImageEncoder, QueryTextEncoder

                encoder = QueryTextEncoder if kind == "text" else QueryImageEncoder
                # Per-session threads, no spin-waiting: concurrent callers then share the cores
                # instead of each one's thread pool spinning against the others'.
                self._light_encoders[kind] = encoder.for_index(self.store.model_spec, threads=_QUERY_THREADS) or False
            return self._light_encoders[kind] or None

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Text vectors for queries: the light exported encoder when the full model is not loaded."""
        encoder = self._light_encoder("text")
        return encoder.embed_texts(texts) if encoder else self.model.embed_texts(texts)  # type: ignore[attr-defined]

    def _embed_query_images(self, images: list[Image.Image]) -> np.ndarray:
        encoder = self._light_encoder("image")
        return encoder.embed_images(images) if encoder else self.model.embed_images(images)  # type: ignore[attr-defined]

    def embed_text_query(self, text: str) -> np.ndarray:
        cleaned = " ".join(text.split())
        if not cleaned:
            raise InvalidQueryError("the query text is empty")
        return self.embed_texts([cleaned[: self.limits.max_query_chars]])[0]

    def embed_image_query(self, image: str | Path | Image.Image) -> np.ndarray:
        if isinstance(image, Image.Image):
            return self._embed_query_images([image])[0]
        path = Path(image)
        if not os.path.lexists(path):  # not "vanished": it never was there
            raise InvalidQueryError(f"no such file: {image}")
        try:
            decoded = decode_image(path)
        except ImageReadError as e:
            raise InvalidQueryError(f"query image '{image}': {e}") from None
        return self._embed_query_images([decoded.image])[0]

    def embed_query(self, query: Query) -> np.ndarray:
        """One unit vector for a text, an image, a vector or a weighted combination of terms."""
        if isinstance(query, np.ndarray):
            return query.astype(np.float32)
        if isinstance(query, (Path, Image.Image)):
            return self.embed_image_query(query)
        terms = parse_query(query) if isinstance(query, str) else list(query)
        total = np.zeros(self.store.dim or 0, dtype=np.float32)
        for term in terms:
            vector = self.embed_image_query(term.value) if term.kind == "image" else self.embed_text_query(term.value)
            total += term.weight * vector
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise InvalidQueryError("the query's terms cancel each other out")
        return total / norm

    # --- searching --------------------------------------------------------------------------
    def search(
        self,
        query: Query,
        k: int = 10,
        target: Kind = "image",
        filters: SearchFilter | None = None,
        rerank: RerankOptions | bool = True,
        min_score: MinScore = None,
    ) -> list[Hit]:
        """Top-k hits for any query. `filters` act inside the search.

        `min_score` is a floor on each hit's own score: every hit returned scores at least that.
        "auto" sets the floor from the score distribution of the top candidates (a fixed depth,
        RerankOptions.candidates; see search.rerank.stages.auto_score_floor), never from k.
        Asking for a larger k only appends hits: the list for k is a prefix of the list for k + 1."""
        _check_filters(filters, target)  # before the query is embedded
        _check_min_score(min_score)
        if k <= 0:
            return []
        if isinstance(query, str):
            query = parse_query(query)  # once: the terms give both the vector and the query's kind
        return self._hit_list(self.embed_query(query), k, target, filters, rerank, _query_kind(query), min_score)

    def search_text(self, text: str, k: int = 10, target: Kind = "image", **options: object) -> list[Hit]:
        return self.search(_plain_text(text, self.limits.max_query_chars), k, target, **options)  # type: ignore[arg-type]

    def search_image(
        self, image: str | Path | Image.Image, k: int = 10, target: Kind = "image", **options: object
    ) -> list[Hit]:
        return self.search(image if isinstance(image, Image.Image) else Path(image), k, target, **options)  # type: ignore[arg-type]

    def search_texts(
        self, texts: Sequence[str], k: int = 10, target: Kind = "image", **options: object
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched text queries for pipelines: (scores, ids), arrays of shape (len(texts), k)."""
        cleaned = [" ".join(t.split())[: self.limits.max_query_chars] for t in texts]
        if any(not t for t in cleaned):
            raise InvalidQueryError("a query text is empty")
        return self.search_vectors(self.embed_texts(cleaned), k, target, query_kind="text", **options)  # type: ignore[arg-type]

    def similar(
        self,
        item_id: int,
        k: int = 10,
        kind: Kind = "image",
        target: Kind | None = None,
        min_score: MinScore = None,
        **options: object,
    ) -> list[Hit]:
        """Items most like a stored item ("more like this"); never the item itself. `min_score` as
        for `search`."""
        _check_min_score(min_score)
        vectors = self.vectors([item_id], kind)
        if len(vectors) == 0:
            raise InvalidQueryError(f"no {kind} with id {item_id} in the index")
        target = target or kind
        exclude = item_id if target == kind else None
        return self._hit_list(vectors[0], k, target, query_kind=kind, min_score=min_score, exclude=exclude, **options)  # type: ignore[arg-type]

    def vectors(self, ids: Sequence[int], kind: Kind = "image") -> np.ndarray:
        """Stored full-precision vectors, in the order of ids (missing ids are left out)."""
        found, vecs = self.store.metadata.vectors(_TABLES[kind], [int(i) for i in ids])
        if len(found) == 0:
            return np.zeros((0, self.store.dim or 0), dtype=np.float32)
        position = {int(i): row for row, i in enumerate(found)}
        return vecs[[position[int(i)] for i in ids if int(i) in position]]

    def search_vectors(
        self,
        queries: np.ndarray,
        k: int = 10,
        target: Kind = "image",
        filters: SearchFilter | None = None,
        rerank: RerankOptions | bool = True,
        query_kind: Kind | None = None,
        bank: np.ndarray | None = None,
        extra: CandidateFeatures | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched search: (scores, ids), each (n_queries, k); ids are -1 past the last hit.

        query_kind says what the query vectors embed (see SecondStage.run); `bank` replaces the
        QB-Norm bank of the target's direction (the evaluation passes one without its queries);
        `extra`: per-candidate features for a learned fusion fitted with them (CandidateFeatures)."""
        ranked = self._ranked(queries, k, target, filters, rerank, query_kind, bank, extra=extra)
        return ranked.scores, ranked.ids

    def _hit_list(
        self,
        vector: np.ndarray,
        k: int,
        target: Kind,
        filters: SearchFilter | None = None,
        rerank: RerankOptions | bool = True,
        query_kind: Kind | None = None,
        min_score: MinScore = None,
        exclude: int | None = None,
    ) -> list[Hit]:
        """The hits of one query vector: every one at least `min_score`, `exclude` left out; more
        candidates are ranked while a floor, duplicates or `exclude` leave fewer than k."""
        ranked = self._ranked(vector[None, :], k, target, filters, rerank, query_kind, None, min_score, True, exclude)
        keep = ranked.ids[0] >= 0
        return self._hits(target, ranked.scores[0][keep], ranked.ids[0][keep], ranked.copies[0][keep])

    def _ranked(
        self,
        queries: np.ndarray,
        k: int,
        target: Kind,
        filters: SearchFilter | None,
        rerank: RerankOptions | bool,
        query_kind: Kind | None,
        bank: np.ndarray | None = None,
        floor: MinScore = None,
        fill: bool = False,
        exclude: int | None = None,
        extra: CandidateFeatures | None = None,
    ) -> Ranked:
        """First stage then second stage, (n, k) hits in their final order.

        The second stage ranks blocks of `candidates` by first-stage rank (search.rerank.pipeline), so
        a deeper search only appends hits. With `fill`, further blocks are ranked until k hits passed
        the floor and the duplicate collapse, or the index (or limits.max_depth) is exhausted. The
        item `exclude` (the query's own, for "more like this") takes no part at all."""
        options = rerank if isinstance(rerank, RerankOptions) else (RerankOptions() if rerank else None)
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.limits.max_depth)
        with self._lock:
            index = self.store.vectors(target)
        _check_filters(filters, target)
        allowed = None
        if filters is not None and filters.active:
            with self.store.metadata.session() as s:
                allowed = filters.allowed_ids(s, target)
        if options is None:  # first stage only: scores fall monotonically, so a floor keeps a prefix
            fixed = RerankOptions().candidates  # the depth "auto" reads, as with the second stage
            depth = min(max(k, fixed) if floor == "auto" else k, self.limits.max_depth)
            scores, ids = self._first_stage(index, queries, depth, allowed, exclude)
            if floor is not None:
                floors = [auto_score_floor(row[:fixed]) if floor == "auto" else float(floor) for row in scores]
                below = scores.astype(np.float64) < np.array(floors)[:, None]  # as handed out: float32
                scores, ids = np.where(below, -np.inf, scores), np.where(below, -1, ids)
            scores, ids = _pad(scores[:, :k], ids[:, :k], k)
            return Ranked(scores, ids, np.zeros(ids.shape, dtype=np.int64), np.zeros(len(ids), dtype=bool))
        block = max(1, min(options.candidates, self.limits.max_depth))
        if block != options.candidates:
            options = replace(options, candidates=block)
        blocks = max(1, -(-k // block))
        while True:
            depth = min(blocks * block, self.limits.max_depth)
            scores, ids = self._first_stage(index, queries, depth, allowed, exclude)
            # the second stage takes the compute lock for its NumPy work, not for its SQL reads
            candidates = Candidates(queries, scores, ids, extra)
            ranked = self.second_stage.run(candidates, target, options, query_kind, bank, floor)
            exhausted = ids.shape[1] < depth or bool((ids[:, -1] < 0).all()) or depth >= self.limits.max_depth
            exhausted = exhausted or bool(ranked.ended.all())
            if not fill or exhausted or int((ranked.ids >= 0).sum(axis=1).min()) >= k:
                break
            blocks *= 2
        scores, ids = _pad(ranked.scores[:, :k], ranked.ids[:, :k], k)
        copies = np.zeros(ids.shape, dtype=np.int64)
        copies[:, : min(k, ranked.copies.shape[1])] = ranked.copies[:, :k]
        return Ranked(scores, ids, copies, ranked.ended)

    def _first_stage(
        self, index: VectorIndex, queries: np.ndarray, depth: int, allowed: np.ndarray | None, exclude: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's top `depth` (scores, ids), without the item `exclude`."""
        with self._compute_lock:
            scores, ids = index.search(queries, depth + (exclude is not None), allowed)
        if exclude is None:
            return scores, ids
        keep = ids != exclude
        width = min(depth, int(keep.sum(axis=1).max(initial=0)))
        out_scores = np.full((len(ids), width), -np.inf, dtype=np.float32)
        out_ids = np.full((len(ids), width), -1, dtype=np.int64)
        for row in range(len(ids)):
            kept_scores, kept_ids = scores[row][keep[row]][:width], ids[row][keep[row]][:width]
            out_scores[row, : len(kept_ids)], out_ids[row, : len(kept_ids)] = kept_scores, kept_ids
        return out_scores, out_ids

    def rank_vectors(self, queries: np.ndarray, k: int, target: Kind = "image", rerank: bool = True) -> np.ndarray:
        """Ids of the top k for each query, best first."""
        return self.search_vectors(queries, k, target, rerank=rerank)[1]

    def _hits(self, kind: Kind, scores: np.ndarray, ids: np.ndarray, copies: np.ndarray) -> list[Hit]:
        valid = [(int(i), float(s), int(c)) for i, s, c in zip(ids, scores, copies) if i >= 0]
        if not valid:
            return []
        wanted = [i for i, _, _ in valid]
        with self.store.metadata.session() as s:
            if kind == "image":
                rows = {
                    r.id: (r.path, None)
                    for r in s.execute(select(ImageRow.id, ImageRow.path).where(ImageRow.id.in_(wanted)))
                }
            else:
                rows = {
                    r.id: (r.source, r.text)
                    for r in s.execute(select(TextRow.id, TextRow.source, TextRow.text).where(TextRow.id.in_(wanted)))
                }
        # A row deleted by a concurrent writer after the vector search is simply left out.
        return [Hit(i, kind, score, rows[i][0], rows[i][1], copies) for i, score, copies in valid if i in rows]


def _check_filters(filters: SearchFilter | None, target: Kind) -> None:
    if filters is not None and target == "text" and filters.photo_only():
        names = ", ".join(f"--{name}" for name in filters.photo_only())
        raise InvalidQueryError(
            f"{names} filter photos only (texts have no date, extension or size); use --under for texts"
        )


def _plain_text(text: str, max_chars: int) -> list[QueryTerm]:
    cleaned = " ".join(text.split())
    if not cleaned:
        raise InvalidQueryError("the query text is empty")
    return [QueryTerm(1.0, "text", cleaned[:max_chars])]


def _query_kind(query: Query) -> Kind | None:
    """The kind of a query made of one kind of term; None for vectors and mixed combinations."""
    if isinstance(query, (Path, Image.Image)):
        return "image"
    if isinstance(query, (np.ndarray, str)):
        return None
    kinds = {term.kind for term in query}
    return kinds.pop() if len(kinds) == 1 else None  # type: ignore[return-value]


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if scores.shape[1] == k:
        return scores, ids
    n = scores.shape[0]
    padded_scores = np.full((n, k), -np.inf, dtype=np.float32)
    padded_ids = np.full((n, k), -1, dtype=np.int64)
    padded_scores[:, : scores.shape[1]] = scores
    padded_ids[:, : ids.shape[1]] = ids
    return padded_scores, padded_ids


def _check_min_score(min_score: MinScore) -> None:
    if min_score is None or min_score == "auto":
        return
    if isinstance(min_score, str) or not np.isfinite(float(min_score)):
        raise InvalidQueryError(f"min_score must be a finite number or 'auto', not {min_score!r}")

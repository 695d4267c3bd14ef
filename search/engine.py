"""The query engine: a query flows forward, parse → embed → candidates (FAISS) → second stage
(search.rerank.pipeline) → hits, and never comes back here between the steps."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image
from sqlalchemy import select

from xmodal.indexer.errors import ImageReadError, InvalidQueryError, ModelMismatchError
from xmodal.indexer.images import decode_image
from xmodal.indexer.store.index_store import IndexStore, Kind
from xmodal.indexer.store.schema import ImageRow, TextRow
from xmodal.search.filters import SearchFilter
from xmodal.search.hits import Hit
from xmodal.search.query import QueryTerm, parse_query
from xmodal.search.rerank.pipeline import Candidates, SecondStage
from xmodal.search.rerank.qbnorm import QueryBanks
from xmodal.search.rerank.stages import RerankOptions

if TYPE_CHECKING:
    from xmodal.indexer.models.embedding import EmbeddingModel

__all__ = ["SearchEngine", "MAX_QUERY_CHARS", "Query"]

# Longer queries are cut: the text towers read a few hundred tokens at most anyway.
MAX_QUERY_CHARS = 2000
# onnxruntime threads of one query encoder run: a short query gains little past two.
_QUERY_THREADS = max(1, min(2, os.cpu_count() or 1))
_TABLES: dict[str, type[ImageRow] | type[TextRow]] = {"image": ImageRow, "text": TextRow}
Query = str | Path | Image.Image | np.ndarray | Sequence[QueryTerm]
MinScore = float | Literal["auto"] | None


class SearchEngine:
    """Searches one index. Safe to share between threads: reads take no lock on the database."""

    def __init__(self, store: IndexStore, model: EmbeddingModel | None = None) -> None:
        self._model = model
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
        cls, index_dir: Path | str | None = None, model: EmbeddingModel | str | None = None, db_url: str | None = None
    ) -> SearchEngine:
        """Open an existing index; the model defaults to the one the index was built with."""
        store = IndexStore.open(index_dir, db_url)
        recorded = store.model_spec
        if recorded and (model is None or isinstance(model, str)):  # a model object passed in is trusted
            from xmodal.indexer.models.spec import model_fingerprint, parse_model_spec

            try:
                store.check_fingerprint(model_fingerprint(parse_model_spec(recorded)))
            except Exception:
                store.close()
                raise
        if isinstance(model, str):
            from xmodal.indexer.models.spec import parse_model_spec

            if recorded and str(parse_model_spec(model)) != recorded:
                store.close()
                raise ModelMismatchError(f"index '{store.directory}' was built with model '{recorded}', not '{model}'")
            model = None
        if model is not None and recorded and str(model.spec) != recorded:
            store.close()
            raise ModelMismatchError(f"index '{store.directory}' was built with model '{recorded}', not '{model.spec}'")
        return cls(store, model)  # type: ignore[arg-type]

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
        return self.embed_texts([cleaned[:MAX_QUERY_CHARS]])[0]

    def embed_image_query(self, image: str | Path | Image.Image) -> np.ndarray:
        if isinstance(image, Image.Image):
            return self._embed_query_images([image])[0]
        try:
            decoded = decode_image(Path(image))
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
        """Top-k hits for any query. `filters` act inside the search; `min_score` may be "auto"."""
        _check_filters(filters, target)  # before the query is embedded
        if k <= 0:
            return []
        if isinstance(query, str):
            query = parse_query(query)  # once: the terms give both the vector and the query's kind
        scores, ids = self.search_vectors(
            self.embed_query(query)[None, :], k, target, filters, rerank, _query_kind(query)
        )
        keep = _score_cutoff(scores[0], min_score)
        return self._hits(target, scores[0][:keep], ids[0][:keep])

    def search_text(self, text: str, k: int = 10, target: Kind = "image", **options: object) -> list[Hit]:
        return self.search(_plain_text(text), k, target, **options)  # type: ignore[arg-type]

    def search_image(
        self, image: str | Path | Image.Image, k: int = 10, target: Kind = "image", **options: object
    ) -> list[Hit]:
        return self.search(image if isinstance(image, Image.Image) else Path(image), k, target, **options)  # type: ignore[arg-type]

    def search_texts(
        self, texts: Sequence[str], k: int = 10, target: Kind = "image", **options: object
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched text queries for pipelines: (scores, ids), arrays of shape (len(texts), k)."""
        cleaned = [" ".join(t.split())[:MAX_QUERY_CHARS] for t in texts]
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
        vectors = self.vectors([item_id], kind)
        if len(vectors) == 0:
            raise InvalidQueryError(f"no {kind} with id {item_id} in the index")
        target = target or kind
        scores, ids = self.search_vectors(vectors, k + 1, target, query_kind=kind, **options)  # type: ignore[arg-type]
        keep = [(s, i) for s, i in zip(scores[0], ids[0]) if not (target == kind and i == item_id)][:k]
        kept_scores = np.array([s for s, _ in keep], dtype=np.float32)
        cut = _score_cutoff(kept_scores, min_score)
        return self._hits(target, kept_scores[:cut], np.array([i for _, i in keep][:cut], dtype=np.int64))

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
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched search: (scores, ids), each (n_queries, k); ids are -1 past the last hit.

        query_kind says what the query vectors embed (see SecondStage.run); `bank` replaces the
        QB-Norm bank of the target's direction (the evaluation passes one without its queries)."""
        options = rerank if isinstance(rerank, RerankOptions) else (RerankOptions() if rerank else None)
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            index = self.store.vectors(target)
        _check_filters(filters, target)
        allowed = None
        if filters is not None and filters.active:
            with self.store.metadata.session() as s:
                allowed = filters.allowed_ids(s, target)
        depth = max(k, options.candidates) if options else k
        with self._compute_lock:
            scores, ids = index.search(queries, depth, allowed)
        if options is not None:  # takes the compute lock for its NumPy work, not for its SQL reads
            scores, ids = self.second_stage.run(Candidates(queries, scores, ids), target, options, query_kind, bank)
        return _pad(scores[:, :k], ids[:, :k], k)

    def rank_vectors(self, queries: np.ndarray, k: int, target: Kind = "image", rerank: bool = True) -> np.ndarray:
        """Ids of the top k for each query, best first."""
        return self.search_vectors(queries, k, target, rerank=rerank)[1]

    def _hits(self, kind: Kind, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        valid = [(int(i), float(s)) for i, s in zip(ids, scores) if i >= 0]
        if not valid:
            return []
        wanted = [i for i, _ in valid]
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
        return [Hit(i, kind, score, rows[i][0], rows[i][1]) for i, score in valid if i in rows]


def _check_filters(filters: SearchFilter | None, target: Kind) -> None:
    if filters is not None and target == "text" and filters.photo_only():
        names = ", ".join(f"--{name}" for name in filters.photo_only())
        raise InvalidQueryError(
            f"{names} filter photos only (texts have no date, extension or size); use --under for texts"
        )


def _plain_text(text: str) -> list[QueryTerm]:
    cleaned = " ".join(text.split())
    if not cleaned:
        raise InvalidQueryError("the query text is empty")
    return [QueryTerm(1.0, "text", cleaned[:MAX_QUERY_CHARS])]


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


def _score_cutoff(scores: np.ndarray, min_score: MinScore) -> int:
    """How many leading hits pass the cutoff. "auto" cuts at the largest drop between neighbours,
    when that drop stands out (over 3× the median drop) among the finite scores."""
    finite = scores[np.isfinite(scores)]
    if min_score is None or len(finite) == 0:
        return len(finite)
    if min_score != "auto":
        return int(np.sum(finite >= float(min_score)))
    if len(finite) < 3:
        return len(finite)
    drops = finite[:-1] - finite[1:]
    cut = int(np.argmax(drops))
    return cut + 1 if drops[cut] > 3 * max(float(np.median(drops)), 1e-6) else len(finite)

"""The query engine: embed a query, take candidates from FAISS, re-rank them, return hits."""

from __future__ import annotations

import threading
from dataclasses import replace
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
from xmodal.search.rerank.fusion import TOP, FusionModel, fusion_features
from xmodal.search.hits import Hit
from xmodal.search.query import QueryTerm, parse_query
from xmodal.search.rerank.stages import QB_NORM_BETA, RerankOptions, collapse_duplicates, exact_scores, maximal_marginal_relevance, querybank_normalise

if TYPE_CHECKING:
    from xmodal.indexer.models.embedding import EmbeddingModel

__all__ = ["SearchEngine", "MAX_QUERY_CHARS", "Query"]

# Longer queries are cut: the text towers read a few hundred tokens at most anyway.
MAX_QUERY_CHARS = 2000
_TABLES = {"image": ImageRow, "text": TextRow}
Query = str | Path | Image.Image | np.ndarray | Sequence[QueryTerm]
MinScore = float | Literal["auto"] | None


class SearchEngine:
    """Searches one index. Safe to share between threads: reads take no lock on the database."""

    def __init__(self, store: IndexStore, model: EmbeddingModel | None = None) -> None:
        self.store = store
        self._model = model
        self._lock = threading.RLock()
        self._banks: dict[str, np.ndarray] = {}
        self._fusion_model: FusionModel | bool | None = None  # False: the index's model has none
        self._light_encoders: dict[str, object] = {}  # exported query encoders; False when there is none

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
                self._light_encoders[kind] = encoder.for_index(self.store.model_spec) or False
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
        if k <= 0:
            return []
        if isinstance(query, str):
            query = parse_query(query)  # once: the terms give both the vector and the query's kind
        scores, ids = self.search_vectors(self.embed_query(query)[None, :], k, target, filters, rerank, _query_kind(query))
        keep = _score_cutoff(scores[0], min_score)
        return self._hits(target, scores[0][:keep], ids[0][:keep])

    def search_text(self, text: str, k: int = 10, target: Kind = "image", **options: object) -> list[Hit]:
        return self.search(_plain_text(text), k, target, **options)  # type: ignore[arg-type]

    def search_image(self, image: str | Path | Image.Image, k: int = 10, target: Kind = "image", **options: object) -> list[Hit]:
        return self.search(image if isinstance(image, Image.Image) else Path(image), k, target, **options)  # type: ignore[arg-type]

    def search_texts(self, texts: Sequence[str], k: int = 10, target: Kind = "image", **options: object) -> tuple[np.ndarray, np.ndarray]:
        """Batched text queries for pipelines: (scores, ids), arrays of shape (len(texts), k)."""
        cleaned = [" ".join(t.split())[:MAX_QUERY_CHARS] for t in texts]
        if any(not t for t in cleaned):
            raise InvalidQueryError("a query text is empty")
        return self.search_vectors(self.embed_texts(cleaned), k, target, query_kind="text", **options)  # type: ignore[arg-type]

    def similar(self, item_id: int, k: int = 10, kind: Kind = "image", target: Kind | None = None, **options: object) -> list[Hit]:
        """Items most like a stored item ("more like this"); never the item itself."""
        vectors = self.vectors([item_id], kind)
        if len(vectors) == 0:
            raise InvalidQueryError(f"no {kind} with id {item_id} in the index")
        target = target or kind
        scores, ids = self.search_vectors(vectors, k + 1, target, query_kind=kind, **options)  # type: ignore[arg-type]
        keep = [(s, i) for s, i in zip(scores[0], ids[0]) if not (target == kind and i == item_id)][:k]
        return self._hits(target, np.array([s for s, _ in keep]), np.array([i for _, i in keep], dtype=np.int64))

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
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched search: (scores, ids), each (n_queries, k); ids are -1 past the last hit.

        query_kind says what the query vectors embed; hubness correction runs only across
        modalities (its banks are typical queries of the other kind), and when it is None; the
        learned fusion re-scores text queries for images (it was trained on captions)."""
        options = rerank if isinstance(rerank, RerankOptions) else (RerankOptions() if rerank else None)
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            index = self.store.vectors(target)
        allowed = None
        if filters is not None and filters.active:
            with self.store.metadata.session() as s:
                allowed = filters.allowed_ids(s, target)
        depth = max(k, options.candidates) if options else k
        scores, ids = index.search(queries, depth, allowed)
        if options is not None:
            if query_kind == target and options.hubness:
                options = replace(options, hubness=False)
            scores, ids = self._rerank(queries, scores, ids, target, options, query_kind)
        return _pad(scores[:, :k], ids[:, :k], k)

    def rank_vectors(self, queries: np.ndarray, k: int, target: Kind = "image", rerank: bool = True) -> np.ndarray:
        """Ids of the top k for each query, best first."""
        return self.search_vectors(queries, k, target, rerank=rerank)[1]

    # --- second stage -----------------------------------------------------------------------
    def _rerank(
        self,
        queries: np.ndarray,
        scores: np.ndarray,
        ids: np.ndarray,
        target: Kind,
        options: RerankOptions,
        query_kind: Kind | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        unique = np.unique(ids[ids >= 0])
        stored = dict(zip(*self.store.metadata.vectors(_TABLES[target], unique.tolist()))) if len(unique) else {}
        bank = self._bank(target) if options.hubness else None
        fusion = self._fusion() if options.learned and target == "image" and query_kind == "text" else None
        out_scores = np.full_like(scores, -np.inf, dtype=np.float32)
        out_ids = np.full_like(ids, -1)
        for row, query in enumerate(queries):
            cand = np.array([i for i in ids[row] if i >= 0 and int(i) in stored], dtype=np.int64)
            if len(cand) == 0:
                continue
            vecs = np.stack([stored[int(i)] for i in cand])
            cosines = exact_scores(query, vecs)
            new = cosines
            if bank is not None:
                bank_scores = bank @ vecs.T
                bank_scores = bank_scores[(bank @ query) < 0.9999]  # never the query itself
                new = querybank_normalise(cosines, bank_scores, QB_NORM_BETA[target])
            order = np.argsort(-new, kind="stable")
            if fusion is not None:
                order = self._fused_order(fusion, query, cand, vecs, cosines, new - cosines, order)
                # Scores stay the (hubness-corrected) cosines, handed out in the fused order, so
                # they read as before and still fall monotonically (--min-score relies on that).
                new = new.copy()
                new[order] = np.sort(new)[::-1]
            if options.diverse is not None:
                order = order[maximal_marginal_relevance(new[order], vecs[order], len(order), options.diverse)]
            if options.duplicate_threshold is not None:
                order = collapse_duplicates(order, vecs, options.duplicate_threshold)
            out_scores[row, : len(order)] = new[order]
            out_ids[row, : len(order)] = cand[order]
        return out_scores, out_ids

    def _fused_order(
        self, fusion: FusionModel, query: np.ndarray, cand: np.ndarray, vecs: np.ndarray,
        cosines: np.ndarray, hub: np.ndarray, order: np.ndarray,
    ) -> np.ndarray:
        """The learned fusion's order of the top candidates by cosine (as it was trained), followed
        by the rest in their present order; unchanged when a candidate was indexed without tower features."""
        top = np.argsort(-cosines, kind="stable")[:TOP]
        features = self.store.metadata.tower_features(cand[top].tolist())
        if len(top) < 2 or len(features) < len(top):
            return order
        raw = fusion_features(fusion, query, vecs[top], np.stack([features[int(i)] for i in cand[top]]), hub[top])
        fused = top[np.argsort(-fusion.scores(raw), kind="stable")]
        return np.concatenate([fused, order[~np.isin(order, top)]])

    def _fusion(self) -> FusionModel | None:
        """The shipped fusion model, for indexes built with the offline default and its shipped head."""
        with self._lock:
            if self._fusion_model is None:
                from xmodal.indexer.models.spec import parse_model_spec
                from xmodal.data import data_path

                spec = parse_model_spec(self.store.model_spec) if self.store.model_spec else None
                path = data_path("offline_fusion.npz")
                usable = spec is not None and spec.is_offline_default and spec.head is None and path.is_file()
                self._fusion_model = FusionModel.load(path) if usable else False
            return self._fusion_model or None

    def _bank(self, target: Kind) -> np.ndarray | None:
        """Typical queries for the target (QB-Norm's bank)."""
        with self._lock:
            index = self.store.vectors(target)
            key = f"{target}:{len(index)}"
            if key not in self._banks:
                from xmodal.search.rerank.querybank import querybank_vectors

                bank = querybank_vectors(self, target)
                if bank is None or len(bank) == 0 or len(index) == 0:
                    return None
                self._banks = {key: bank}
            return self._banks[key]

    def _hits(self, kind: Kind, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        valid = [(int(i), float(s)) for i, s in zip(ids, scores) if i >= 0]
        if not valid:
            return []
        wanted = [i for i, _ in valid]
        with self.store.metadata.session() as s:
            if kind == "image":
                rows = {r.id: (r.path, None) for r in s.execute(select(ImageRow.id, ImageRow.path).where(ImageRow.id.in_(wanted)))}
            else:
                rows = {r.id: (r.source, r.text) for r in s.execute(select(TextRow.id, TextRow.source, TextRow.text).where(TextRow.id.in_(wanted)))}
        # A row deleted by a concurrent writer after the vector search is simply left out.
        return [Hit(i, kind, score, rows[i][0], rows[i][1]) for i, score in valid if i in rows]


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

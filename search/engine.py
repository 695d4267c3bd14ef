"""The query engine: embed a query, search FAISS, return hits with their metadata."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from sqlalchemy import select

from indexer.errors import ImageReadError, InvalidQueryError, ModelMismatchError
from indexer.images import decode_image
from indexer.index_store import IndexStore, Kind
from indexer.models import EmbeddingModel, load_model
from indexer.storage import ImageRow, TextRow
from search.hits import Hit

__all__ = ["SearchEngine", "MAX_QUERY_CHARS"]

# Longer queries are cut: the text towers read a few hundred tokens at most anyway.
MAX_QUERY_CHARS = 2000


class SearchEngine:
    """Searches one index. Safe to share between threads for reads."""

    def __init__(self, store: IndexStore, model: EmbeddingModel | None = None) -> None:
        self.store = store
        self._model = model
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls, index_dir: Path | str | None = None, model: EmbeddingModel | str | None = None, db_url: str | None = None
    ) -> SearchEngine:
        """Open an existing index; the model defaults to the one the index was built with."""
        store = IndexStore.open(index_dir, db_url)
        recorded = store.model_spec
        if isinstance(model, str) and recorded and model != recorded:
            from indexer.model_spec import parse_model_spec

            if str(parse_model_spec(model)) != recorded:
                raise ModelMismatchError(
                    f"index '{store.directory}' was built with model '{recorded}', not '{model}'"
                )
            model = None
        if isinstance(model, EmbeddingModel) and recorded and str(model.spec) != recorded:
            raise ModelMismatchError(f"index '{store.directory}' was built with model '{recorded}', not '{model.spec}'")
        return cls(store, model if isinstance(model, EmbeddingModel) else None)

    def close(self) -> None:
        self.store.close()

    @property
    def model(self) -> EmbeddingModel:
        with self._lock:
            if self._model is None:
                self._model = load_model(self.store.model_spec)
            return self._model

    # --- queries ----------------------------------------------------------------------------
    def embed_text_query(self, text: str) -> np.ndarray:
        cleaned = " ".join(text.split())
        if not cleaned:
            raise InvalidQueryError("the query text is empty")
        return self.model.embed_texts([cleaned[:MAX_QUERY_CHARS]])[0]

    def embed_image_query(self, image: str | Path | Image.Image) -> np.ndarray:
        if isinstance(image, Image.Image):
            return self.model.embed_images([image])[0]
        try:
            decoded = decode_image(Path(image))
        except ImageReadError as e:
            raise InvalidQueryError(f"query image '{image}': {e}") from None
        return self.model.embed_images([decoded.image])[0]

    def search_text(self, text: str, k: int = 10, target: Kind = "image") -> list[Hit]:
        return self.search_vector(self.embed_text_query(text), k, target)

    def search_image(self, image: str | Path | Image.Image, k: int = 10, target: Kind = "image") -> list[Hit]:
        return self.search_vector(self.embed_image_query(image), k, target)

    def search_vector(self, query: np.ndarray, k: int = 10, target: Kind = "image") -> list[Hit]:
        if k <= 0:
            return []
        scores, ids = self.search_vectors(query[None, :], k, target)
        return self._hits(target, scores[0], ids[0])

    def search_vectors(self, queries: np.ndarray, k: int = 10, target: Kind = "image", rerank: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Batched search: (scores, ids), each (n_queries, k); ids are -1 past the last hit."""
        with self._lock:
            index = self.store.vectors(target)
        scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids

    def rank_vectors(self, queries: np.ndarray, k: int, target: Kind = "image", rerank: bool = True) -> np.ndarray:
        """Ids of the top k for each query, best first."""
        return self.search_vectors(queries, k, target, rerank)[1]

    def search_texts(self, texts: list[str], k: int = 10, target: Kind = "image") -> tuple[np.ndarray, np.ndarray]:
        """Batched text queries for pipelines: (scores, ids) as arrays of shape (len(texts), k)."""
        cleaned = [" ".join(t.split())[:MAX_QUERY_CHARS] for t in texts]
        if any(not t for t in cleaned):
            raise InvalidQueryError("a query text is empty")
        return self.search_vectors(self.model.embed_texts(cleaned), k, target)

    def _hits(self, kind: Kind, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        valid = [(int(i), float(s)) for i, s in zip(ids, scores) if i >= 0]
        if not valid:
            return []
        with self.store.metadata.session() as s:
            if kind == "image":
                rows = {r.id: (r.path, None) for r in s.execute(select(ImageRow.id, ImageRow.path).where(ImageRow.id.in_([i for i, _ in valid])))}
            else:
                rows = {r.id: (r.source, r.text) for r in s.execute(select(TextRow.id, TextRow.source, TextRow.text).where(TextRow.id.in_([i for i, _ in valid])))}
        return [Hit(i, kind, score, rows[i][0], rows[i][1]) for i, score in valid if i in rows]

"""The query engine: a query flows forward, parse → embed → candidates (FAISS) → second stage
(search.rerank.pipeline) → hits, and never comes back here between the steps."""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from xmodal.indexer.errors import ImageReadError, InvalidQueryError
from xmodal.indexer.images import decode_image
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits
from xmodal.indexer.store.index_store import IndexStore, Kind
from xmodal.indexer.store.model_check import check_model_matches
from xmodal.indexer.store.schema import FrameRow, ImageRow, TextRow, blob_to_vector
from xmodal.indexer.store.vector_index import VectorIndex
from xmodal.search.filters import SearchFilter
from xmodal.search.hits import Hit
from xmodal.search.library import KnownPlace, TimelinePage, item_facts, known_places, timeline
from xmodal.search.pairs import fold_pairs, shot_of
from xmodal.search.planning import (
    IndexVocabulary,
    PhotoTextWords,
    WordScorer,
    fuse_hits,
    matched_parts,
    understood_filter,
)
from xmodal.search.query import QueryTerm, parse_query
from xmodal.search.rerank.pipeline import CandidateFeatures, Candidates, Ranked, SecondStage
from xmodal.search.rerank.qbnorm import QueryBanks
from xmodal.search.rerank.stages import RerankOptions, auto_score_floor, maximal_marginal_relevance
from xmodal.search.understanding import Understood, read_language

if TYPE_CHECKING:
    from xmodal.indexer.facts import Facts
    from xmodal.indexer.models.embedding import EmbeddingModel

__all__ = ["SearchEngine", "MinScore", "Query"]

# onnxruntime threads of one query encoder run: a short query gains little past two.
_QUERY_THREADS = max(1, min(2, os.cpu_count() or 1))
_TABLES: dict[str, type[ImageRow] | type[TextRow]] = {"image": ImageRow, "text": TextRow}
# Frames of videos searched per photo candidate: a video's frames are many views of one item.
_FRAMES_PER_CANDIDATE = 4
Query = str | Path | Image.Image | np.ndarray | Sequence[QueryTerm] | Understood
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
        self._places: tuple[int, IndexStore, list[KnownPlace]] | None = None  # (facts generation, store, places)
        self.store = store  # also builds the second stage (see the setter)

    @property
    def store(self) -> IndexStore:
        return self._store

    @store.setter
    def store(self, store: IndexStore) -> None:
        """Swap the index (a server follows another process's writes this way); the second stage
        follows, and what it keeps is keyed by generation, so nothing stale survives."""
        self._store = store
        self._vocabulary_cache: IndexVocabulary | None = None
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

    # --- the library's facts (search.library) ---------------------------------------------------
    def known_places(self) -> list[KnownPlace]:
        """Every place name of this index's photos (city, region, country) with its count, most
        photos first. Cheap per query: kept until the facts' generation moves on."""
        generation = self.store.metadata.generation("facts")
        cached = self._places
        if cached is not None and cached[0] == generation and cached[1] is self.store:
            return cached[2]
        with self.store.metadata.session() as s:
            places = known_places(s)
        self._places = (generation, self.store, places)
        return places

    def timeline(self, cursor: str | None = None, months: int = 6, per_month: int = 8) -> TimelinePage:
        """The photos by month, newest first (search.library.timeline)."""
        with self.store.metadata.session() as s:
            return timeline(s, cursor, months, per_month)

    def facts(self, item_id: int) -> Facts | None:
        """One photo's facts (indexer.facts), or None when it has none yet."""
        with self.store.metadata.session() as s:
            return item_facts(s, item_id)

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
        if isinstance(query, Understood):
            query = parse_query(query.visual or query.query)
        terms = parse_query(query) if isinstance(query, str) else list(query)
        total = np.zeros(self.store.dim or 0, dtype=np.float32)
        for term in terms:
            vector = self.embed_image_query(term.value) if term.kind == "image" else self.embed_text_query(term.value)
            total += term.weight * vector
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise InvalidQueryError("the query's terms cancel each other out")
        return total / norm

    # --- understanding a plain query ----------------------------------------------------------
    def understand(self, query: str, today: date | None = None, ignore: Collection[str] = ()) -> Understood:
        """What the one-box planner reads in a query (search.understanding): its visual part, dates,
        place, words in the photo and in names. `today` fixes relative dates ("last summer");
        parts named in `ignore` are not read (their words stay visual). Pass the result to `search`."""
        return read_language(self._vocabulary().planner.understand(query, ignore, today=today))

    def _vocabulary(self) -> IndexVocabulary:
        """The planner's vocabulary of this index, rebuilt when its photos change."""
        metadata = self.store.metadata
        generation = (metadata.generation("image"), metadata.generation("facts"))
        with self._lock:
            cached = self._vocabulary_cache
            if cached is None or cached.generation != generation:
                places = [p.name for p in self.known_places()]
                cached = IndexVocabulary.build(self.store, generation, places, self._photo_text_scorer())
                self._vocabulary_cache = cached
            return cached

    def _photo_text_scorer(self) -> WordScorer:
        """The query words' scores against the text read in photos (search.photo_text)."""
        return PhotoTextWords(self.text_matches)

    def _search_understood(
        self,
        understood: Understood,
        k: int,
        target: Kind,
        filters: SearchFilter | None,
        rerank: RerankOptions | bool,
        min_score: MinScore,
    ) -> list[Hit]:
        """Dates (and places) filter inside the search; the visual part ranks; words in the photo and
        in names are scored and fused with it (search.planning.fuse_hits), over the visual
        candidates and the photos that have the words."""
        filters = understood_filter(filters, understood)
        _check_filters(filters, target)
        terms = parse_query(understood.visual or understood.query)
        vector = self.embed_query(terms)
        scored = bool(understood.in_photo or understood.names)
        depth = min(max(k, RerankOptions().candidates), self.limits.max_depth) if scored else k
        diverse = rerank.diverse if isinstance(rerank, RerankOptions) and scored else None
        if diverse is not None:  # diversified after the fusion, over the fused scores
            rerank = replace(rerank, diverse=None)  # type: ignore[type-var]
        hits = self._hit_list(vector, depth, target, filters, rerank, _query_kind(terms), min_score)
        if not scored:
            parts = matched_parts(understood, True, 0.0, 0.0)
            return [replace(h, matched=parts) for h in hits]
        vocabulary = self._vocabulary()
        extra = self._found_by_words(understood, vocabulary, filters, vector, {h.id for h in hits})
        fused = fuse_hits(understood, hits, extra, vocabulary)
        if min_score is not None and min_score != "auto":
            fused = [h for h in fused if h.score >= float(min_score)]
        if diverse is not None and len(fused) > 1:
            found, vectors = self.store.metadata.vectors(ImageRow, [h.id for h in fused])
            by_id = dict(zip(found, vectors))
            kept = [h for h in fused if h.id in by_id]
            scores = np.array([h.score for h in kept], dtype=np.float32)
            order = maximal_marginal_relevance(scores, np.stack([by_id[h.id] for h in kept]), k, diverse)
            return [kept[i] for i in order]
        return fused[:k]

    def _found_by_words(
        self,
        understood: Understood,
        vocabulary: IndexVocabulary,
        filters: SearchFilter | None,
        vector: np.ndarray,
        seen: set[int],
    ) -> list[Hit]:
        """The photos that have the query's words in their text or names and passed the filters but
        not the visual search, with their plain cosine; at most limits.max_depth of them."""
        arrays = [vocabulary.names.matching(list(understood.names))]
        if understood.in_photo and vocabulary.photo_text is not None:
            arrays.append(vocabulary.photo_text.matching(list(understood.in_photo)))
        ids = np.unique(np.concatenate(arrays)).astype(np.int64)
        ids = ids[~np.isin(ids, np.fromiter(seen, dtype=np.int64, count=len(seen)))]
        if len(ids) and filters is not None and filters.active:
            with self.store.metadata.session() as s:
                allowed = filters.allowed_ids(s, "image")
            if allowed is not None:
                ids = ids[np.isin(ids, allowed)]
        if len(ids) == 0:
            return []
        found, vectors = self.store.metadata.vectors(ImageRow, [int(i) for i in ids])
        scores = vectors @ vector.astype(np.float32)
        top = np.argsort(-scores, kind="stable")[: self.limits.max_depth]
        return self._hits("image", scores[top], np.asarray(found)[top], np.zeros(len(top), dtype=np.int64))

    # --- searching --------------------------------------------------------------------------
    def search(
        self,
        query: Query | None,
        k: int = 10,
        target: Kind = "image",
        filters: SearchFilter | None = None,
        rerank: RerankOptions | bool = True,
        min_score: MinScore = None,
        place: str | None = None,
        in_photo: str | None = None,
        literal: bool = False,
    ) -> list[Hit]:
        """Top-k hits for any query. `filters` act inside the search; `place` keeps the photos
        taken there (a city, region or country of `known_places()`; added to `filters`).

        A plain text query for photos is read by the one-box planner first (`understand`: dates and
        places filter, words in the photo and names are fused with the visual score); `literal`
        turns that off, and an `Understood` from `understand` is searched as it was read. Each hit
        says which parts of the query it matched (`Hit.matched`).

        `in_photo`: only photos whose text (read at indexing: indexer.photo_text) holds every word
        of it, exactly or with one character wrong (search.photo_text). Alone (query None) the
        photos come best text match first, scored by it; with a query they are ranked by the query.

        `min_score` is a floor on each hit's own score: every hit returned scores at least that.
        "auto" sets the floor from the score distribution of the top candidates (a fixed depth,
        RerankOptions.candidates; see search.rerank.stages.auto_score_floor), never from k.
        Asking for a larger k only appends hits: the list for k is a prefix of the list for k + 1."""
        if place is not None and place.strip():
            filters = replace(filters or SearchFilter(), place=place)
        _check_filters(filters, target)  # before the query is embedded
        _check_min_score(min_score)
        if in_photo is not None:
            found = self._search_in_photo(query, in_photo, k, target, filters, rerank, min_score)
            parts = ["visual", "text_in_photo"] if query is not None else ["text_in_photo"]
            return [replace(h, matched=parts) for h in found]
        if query is None:
            raise InvalidQueryError("give a query, in_photo, or both")
        if k <= 0:
            return []
        if isinstance(query, str) and not literal and target == "image":
            query = self.understand(query)
        if isinstance(query, Understood):
            return self._search_understood(query, k, target, filters, rerank, min_score)
        if isinstance(query, str):
            query = parse_query(query)  # once: the terms give both the vector and the query's kind
        hits = self._hit_list(self.embed_query(query), k, target, filters, rerank, _query_kind(query), min_score)
        return [replace(h, matched=["visual"]) for h in hits]

    def _search_in_photo(
        self,
        query: Query | None,
        in_photo: str,
        k: int,
        target: Kind,
        filters: SearchFilter | None,
        rerank: RerankOptions | bool,
        min_score: MinScore,
    ) -> list[Hit]:
        if target != "image":
            raise InvalidQueryError("in_photo searches photos, not texts")
        if not " ".join(in_photo.split()):
            raise InvalidQueryError("the in_photo text is empty")
        if k <= 0:
            return []
        from xmodal.search.photo_text import match_photo_text

        with self.store.metadata.session() as s:
            matches = match_photo_text(s, in_photo, self.limits)
            if filters is not None and filters.active and matches:
                passing = filters.allowed_ids(s, target)
                allowed = set() if passing is None else {int(i) for i in passing}
                matches = [m for m in matches if m.item_id in allowed]
        if query is not None:
            if not matches:
                return []
            if isinstance(query, str):
                query = parse_query(query)
            base = {f.name: getattr(filters, f.name) for f in fields(SearchFilter)} if filters is not None else {}
            only = _OnlyIds(**base, only=tuple(sorted(m.item_id for m in matches)))
            return self._hit_list(self.embed_query(query), k, target, only, rerank, _query_kind(query), min_score)
        floor = None if min_score in (None, "auto") else float(min_score)  # type: ignore[arg-type]
        chosen = [m for m in matches if floor is None or m.score >= floor][: min(k, self.limits.max_depth)]
        with self.store.metadata.session() as s:
            rows = {
                r.id: r
                for r in s.execute(
                    select(ImageRow.id, ImageRow.path, ImageRow.media).where(
                        ImageRow.id.in_([m.item_id for m in chosen])
                    )
                )
            }
        # a video is found by one of its frames' text: the hit's time is that frame's
        return [
            Hit(m.item_id, "video", m.score, rows[m.item_id].path, time=m.frame_time)
            if rows[m.item_id].media == "video"
            else Hit(m.item_id, "image", m.score, rows[m.item_id].path)
            for m in chosen
            if m.item_id in rows
        ]

    def text_matches(self, words: Sequence[str]) -> dict[int, float]:
        """{photo id: score} of the photos whose text holds any of `words` (search.photo_text.word_scores):
        per word 1 exact, 1 - 1/len with one character wrong, 0 absent; the mean by word length,
        + 0.1 when all appear as one phrase. For fusing a plain query's words with the visual score."""
        from xmodal.search.photo_text import word_scores

        with self.store.metadata.session() as s:
            return word_scores(s, words, self.limits)

    def photo_text(self, item_id: int) -> list[dict[str, object]]:
        """The text read in a photo: one reading per photo (a video, one per frame), each with its
        status, text and lines ({"text", "score", "box": four [x, y] corners as fractions}); [] when
        not read yet."""
        from xmodal.indexer.store.photo_texts import texts_of

        with self.store.metadata.session() as s:
            return [t.as_dict() for t in texts_of(s, item_id)]

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
        time: float | None = None,
        **options: object,
    ) -> list[Hit]:
        """Items most like a stored item ("more like this"); never the item itself. `min_score` as
        for `search`. From a video: like its frame at `time` seconds (the nearest sampled one), or
        without a time like the video as a whole (its frames' mean direction)."""
        _check_min_score(min_score)
        vectors = self._video_vector(item_id, time) if kind == "image" else None
        if vectors is None:
            vectors = self.vectors([item_id], kind)
        if len(vectors) == 0:
            raise InvalidQueryError(f"no {kind} with id {item_id} in the index")
        target = target or kind
        exclude = item_id if target == kind else None
        return self._hit_list(vectors[0], k, target, query_kind=kind, min_score=min_score, exclude=exclude, **options)  # type: ignore[arg-type]

    def _video_vector(self, item_id: int, time: float | None) -> np.ndarray | None:
        """The query vector of a video for "more like this" (see `similar`); None for a photo."""
        with self.store.metadata.session() as s:
            frames = s.execute(
                select(FrameRow.time, FrameRow.vector).where(FrameRow.item_id == int(item_id)).order_by(FrameRow.time)
            ).all()
        if not frames:
            return None
        vectors = np.stack([blob_to_vector(blob) for _, blob in frames]).astype(np.float32)
        if time is not None:
            nearest = int(np.argmin([abs(t - time) for t, _ in frames]))
            return vectors[nearest : nearest + 1]
        mean = vectors.mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12))[None, :]

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
        depth = k
        while True:
            args = (vector[None, :], depth, target, filters, rerank, query_kind, None, min_score, True, exclude)
            ranked = self._ranked(*args)
            keep = ranked.ids[0] >= 0
            hits = self._hits(target, ranked.scores[0][keep], ranked.ids[0][keep], ranked.copies[0][keep], vector)
            if target != "image":
                return hits
            folded = self._fold_pairs(hits, filters, exclude)  # RAW+JPEG pairs: one hit a shot
            if len(folded) >= k or len(hits) < depth or depth >= self.limits.max_depth:
                return folded[:k]
            depth = min(2 * depth, self.limits.max_depth)

    def _fold_pairs(self, hits: list[Hit], filters: SearchFilter | None, exclude: int | None) -> list[Hit]:
        with self.store.metadata.session() as s:
            allowed = None
            if filters is not None and filters.active:
                admitted = filters.allowed_ids(s, "image")
                if admitted is not None:
                    ids = set(admitted.tolist())
                    allowed = ids.__contains__
            excluded = None
            if exclude is not None:
                path = s.scalar(select(ImageRow.path).where(ImageRow.id == exclude))
                excluded = shot_of(path) if path is not None else None
            return fold_pairs(hits, s, allowed, excluded)

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
            # the frames of videos: read (and their cache held) only by an index that ever had some
            has_frames = target == "image" and self.store.metadata.generation("frame") > 0
            frames = self.store.vectors("frame") if has_frames else None
        if frames is not None and len(frames) == 0:
            frames = None
        _check_filters(filters, target)
        allowed = None
        if filters is not None and filters.active:
            with self.store.metadata.session() as s:
                allowed = filters.allowed_ids(s, target)
        if options is None:  # first stage only: scores fall monotonically, so a floor keeps a prefix
            fixed = RerankOptions().candidates  # the depth "auto" reads, as with the second stage
            depth = min(max(k, fixed) if floor == "auto" else k, self.limits.max_depth)
            scores, ids = self._first_stage(index, queries, depth, allowed, exclude, frames)
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
            scores, ids = self._first_stage(index, queries, depth, allowed, exclude, frames)
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
        self,
        index: VectorIndex,
        queries: np.ndarray,
        depth: int,
        allowed: np.ndarray | None,
        exclude: int | None,
        frames: VectorIndex | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's top `depth` (scores, ids), without the item `exclude`. With `frames` (the frames
        sampled from videos), a video is a candidate with its best frame's score."""
        with self._compute_lock:
            scores, ids = index.search(queries, depth + (exclude is not None), allowed)
        if frames is not None:
            scores, ids = self._with_frames(frames, queries, scores, ids, depth + (exclude is not None), allowed)
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

    def _with_frames(
        self,
        frames: VectorIndex,
        queries: np.ndarray,
        scores: np.ndarray,
        ids: np.ndarray,
        depth: int,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The items' candidates merged with the videos their best frames name: each item once,
        at the best of its own score and its frames' scores, the top `depth` of them."""
        allowed_frames = None
        if allowed is not None:
            allowed_frames = self._frames_of(allowed)
        with self._compute_lock:
            frame_scores, frame_ids = frames.search(queries, depth * _FRAMES_PER_CANDIDATE, allowed_frames)
        wanted = np.unique(frame_ids[frame_ids >= 0])
        if len(wanted) == 0:
            return scores, ids
        with self.store.metadata.session() as s:
            item_of = dict(
                s.execute(select(FrameRow.id, FrameRow.item_id).where(FrameRow.id.in_(wanted.tolist()))).all()
            )
        out_scores = np.full((len(queries), depth), -np.inf, dtype=np.float32)
        out_ids = np.full((len(queries), depth), -1, dtype=np.int64)
        for row in range(len(queries)):
            best: dict[int, float] = {}
            for item, score in zip(ids[row], scores[row]):
                if item >= 0:
                    best[int(item)] = float(score)
            for frame, score in zip(frame_ids[row], frame_scores[row]):
                item = item_of.get(int(frame))
                if item is not None and score > best.get(item, -np.inf):
                    best[item] = float(score)
            ranked = sorted(best.items(), key=lambda pair: (-pair[1], pair[0]))[:depth]
            out_ids[row, : len(ranked)] = [item for item, _ in ranked]
            out_scores[row, : len(ranked)] = [score for _, score in ranked]
        return out_scores, out_ids

    def _frames_of(self, items: np.ndarray) -> np.ndarray:
        """The ids of the frames of these items (a filter's allowed videos)."""
        found: list[int] = []
        listed = [int(i) for i in items]
        with self.store.metadata.session() as s:
            for start in range(0, len(listed), 10_000):
                chunk = listed[start : start + 10_000]
                found.extend(s.scalars(select(FrameRow.id).where(FrameRow.item_id.in_(chunk))))
        return np.array(found, dtype=np.int64)

    def rank_vectors(self, queries: np.ndarray, k: int, target: Kind = "image", rerank: bool = True) -> np.ndarray:
        """Ids of the top k for each query, best first."""
        return self.search_vectors(queries, k, target, rerank=rerank)[1]

    def _hits(
        self, kind: Kind, scores: np.ndarray, ids: np.ndarray, copies: np.ndarray, query: np.ndarray | None = None
    ) -> list[Hit]:
        valid = [(int(i), float(s), int(c)) for i, s, c in zip(ids, scores, copies) if i >= 0]
        if not valid:
            return []
        wanted = [i for i, _, _ in valid]
        with self.store.metadata.session() as s:
            if kind == "image":
                found = s.execute(
                    select(ImageRow.id, ImageRow.path, ImageRow.media).where(ImageRow.id.in_(wanted))
                ).all()
                rows = {r.id: (r.path, None) for r in found}
                videos = [r.id for r in found if r.media == "video"]
                if videos:
                    times = _best_moments(s, videos, query)
                    return [
                        Hit(i, "video", score, rows[i][0], None, copies, time=times.get(i))
                        if i in times
                        else Hit(i, "image", score, rows[i][0], None, copies)
                        for i, score, copies in valid
                        if i in rows
                    ]
            else:
                rows = {
                    r.id: (r.source, r.text)
                    for r in s.execute(select(TextRow.id, TextRow.source, TextRow.text).where(TextRow.id.in_(wanted)))
                }
        # A row deleted by a concurrent writer after the vector search is simply left out.
        hit_kind: Literal["image", "text"] = "text" if kind == "text" else "image"
        return [Hit(i, hit_kind, score, rows[i][0], rows[i][1], copies) for i, score, copies in valid if i in rows]


def _best_moments(session: object, videos: list[int], query: np.ndarray | None) -> dict[int, float]:
    """Each video's moment for a query: the time of its frame nearest the query (the first frame
    when there is no query vector)."""
    rows = session.execute(  # type: ignore[attr-defined]
        select(FrameRow.item_id, FrameRow.time, FrameRow.vector).where(FrameRow.item_id.in_(videos))
    ).all()
    best: dict[int, tuple[float, float]] = {}
    for item, time, blob in rows:
        score = float(blob_to_vector(blob) @ query) if query is not None else -float(time)
        if item not in best or score > best[item][0]:
            best[item] = (score, float(time))
    return {item: moment for item, (_, moment) in best.items()}


@dataclass(frozen=True)
class _OnlyIds(SearchFilter):
    """The user's filters narrowed to the photos whose text matched (already within them)."""

    only: tuple[int, ...] = ()

    @property
    def active(self) -> bool:
        return True

    def allowed_ids(self, session: Session, kind: str) -> np.ndarray | None:
        return np.array(self.only, dtype=np.int64)


def _check_filters(filters: SearchFilter | None, target: Kind) -> None:
    if filters is not None and target == "text" and filters.photo_only():
        names = ", ".join(f"--{name}" for name in filters.photo_only())
        raise InvalidQueryError(
            f"{names} filter photos only (texts have no date, place, extension or size); use --under for texts"
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
    if isinstance(query, (np.ndarray, str, Understood)):
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

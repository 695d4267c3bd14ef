"""The second stage as one forward pass over the first stage's candidates.

    candidates (FAISS: ids and their exact inner products)
      → QB-Norm against the direction's query bank (across modalities only)
      → the learned fusion of the top candidates (text→image, where the model ships one)
      → the score floor (--min-score: a filter on each hit's own score)
      → maximal marginal relevance (--diverse) → near-duplicate collapse (--collapse: the best copy)

A hit's score is its own final score: its cosine, less QB-Norm's hub correction (centred, so still on
the cosine scale), and for the photos the fusion re-ranked, the fusion's score mapped onto the range
of their scores. Without --diverse the scores fall monotonically within each block of candidates.

The first stage's scores are the exact score (flat search, or IVF candidates re-scored with the full
vectors): nothing is scored twice. Stored vectors are read from SQL, the source of truth, only when
a stage needs them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sqlalchemy import select

from xmodal.indexer.store.index_store import IndexStore, Kind
from xmodal.indexer.store.schema import ImageRow, TextRow
from xmodal.search.rerank.fusion import TOP, FusionModel, extra_columns, features_from_parts, photo_parts
from xmodal.search.rerank.qbnorm import QB_NORM_BETA, QueryBanks, querybank_correction, querybank_normalise
from xmodal.search.rerank.stages import RerankOptions, auto_score_floor, fold_duplicates, maximal_marginal_relevance

__all__ = ["CandidateFeatures", "Candidates", "Ranked", "ScoreFloor", "SecondStage", "load_fusion"]

ScoreFloor = float | Literal["auto"] | None

_TABLES: dict[str, type[ImageRow] | type[TextRow]] = {"image": ImageRow, "text": TextRow}
# A bank entry this close to the query is the query itself (image→text: an indexed photo as the query).
_SAME_AS_QUERY = 0.9999


# Extra per-candidate features for the learned fusion, from whoever knows them (e.g. a text-in-photo
# match): (query row, candidate ids) -> {feature name: (len(ids),) values}. A fusion model reads the
# names it was fitted with (FusionModel.extra) and ignores the others; one it lacks counts as absent.
CandidateFeatures = Callable[[int, np.ndarray], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Candidates:
    """The first stage's answer: per query row, candidate ids (-1 past the last) and their exact scores;
    `extra`: the caller's extra per-candidate features (CandidateFeatures), if any."""

    queries: np.ndarray  # (n, d) unit query vectors
    scores: np.ndarray  # (n, c)
    ids: np.ndarray  # (n, c)
    extra: CandidateFeatures | None = None


@dataclass(frozen=True)
class Ranked:
    """The second stage's answer, per query row in the final order: ids (-1 past the last hit), each
    hit's own final score (-inf past the last) and how many near-duplicate copies it stands for.
    `ended`: the row's list is complete although candidates remained (a whole block fell below the
    score floor, so deeper candidates are not ranked: searching deeper would add nothing)."""

    scores: np.ndarray  # (n, c) float32
    ids: np.ndarray  # (n, c) int64
    copies: np.ndarray  # (n, c) int64
    ended: np.ndarray  # (n,) bool

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> Ranked:
        return cls(
            np.full(shape, -np.inf, dtype=np.float32),
            np.full(shape, -1, dtype=np.int64),
            np.zeros(shape, np.int64),
            np.zeros(shape[0], dtype=bool),
        )


def load_fusion(model_spec: str | None) -> FusionModel | None:
    """The learned fusion shipped for an index's model, or None (other models, or a user's own head)."""
    if not model_spec:
        return None
    from xmodal.data import data_path
    from xmodal.indexer.models.spec import parse_model_spec

    spec = parse_model_spec(model_spec)
    fusion_file = spec.capabilities.fusion_file
    # The fusion's features were fitted on the shipped head's space: a retrained head has none.
    if fusion_file is None or spec.head is not None or not data_path(fusion_file).is_file():
        return None
    return FusionModel.load(data_path(fusion_file))


def _diversify_and_fold(
    order: np.ndarray,
    scores: np.ndarray,
    vectors: np.ndarray,
    options: RerankOptions,
    preference: Sequence[tuple[int, ...]] | None,
    shown: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """One block's candidates (`order`, best first) after MMR and the near-duplicate fold: (order,
    copies folded into each). `shown`: vectors of the hits earlier blocks placed."""
    earlier = np.stack(list(shown)) if len(shown) else None
    copies = np.zeros(len(order), dtype=np.int64)
    if options.diverse is not None:
        order = order[maximal_marginal_relevance(scores[order], vectors[order], len(order), options.diverse, earlier)]
    if options.duplicate_threshold is not None:
        _, order, copies = fold_duplicates(order, vectors, options.duplicate_threshold, preference, earlier)
        if options.diverse is None:  # each group shows its chosen copy, with that copy's own score
            resort = np.argsort(-scores[order], kind="stable")
            order, copies = order[resort], copies[resort]
    return order, copies


class _PerItem:
    """Values of gallery items that do not depend on the query, dropped whenever `key` (what they
    depend on: the bank, the index generation) changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: object = None
        self._values: dict[int, np.ndarray | None] = {}  # None: the item has no value (e.g. no features)

    def lookup(self, key: object, ids: np.ndarray) -> tuple[dict[int, np.ndarray | None], np.ndarray]:
        """(known values, positions in ids of the unknown ones)."""
        with self._lock:
            if key != self._key:
                self._key, self._values = key, {}
            known = {int(i): self._values[int(i)] for i in ids if int(i) in self._values}
        missing = np.array([p for p, i in enumerate(ids) if int(i) not in known], dtype=np.int64)
        return known, missing

    def remember(self, key: object, ids: np.ndarray, values: Sequence[np.ndarray | None] | np.ndarray) -> None:
        with self._lock:
            if key == self._key:
                self._values.update(zip((int(i) for i in ids), values))


class SecondStage:
    """Re-scores candidates of one index. Collaborators come in: the store (SQL), the query banks, a
    loader of the fusion model (called once, on first need) and the lock under which the NumPy work
    runs (the engine's, shared with FAISS: their thread pools use every core). Safe to share between
    threads."""

    def __init__(
        self,
        store: IndexStore,
        banks: QueryBanks,
        fusion: Callable[[], FusionModel | None] | None = None,
        compute: AbstractContextManager[object] | None = None,
    ) -> None:
        self._store = store
        self._compute = compute if compute is not None else nullcontext()
        self._banks = banks
        self._fusion_loader = fusion if fusion is not None else (lambda: load_fusion(store.model_spec))
        self._fusion: FusionModel | None = None
        self._fusion_loaded = False
        self._lock = threading.Lock()
        self._corrections = {"image": _PerItem(), "text": _PerItem()}
        self._photo_parts = _PerItem()

    @property
    def banks(self) -> QueryBanks:
        return self._banks

    def forget(self) -> None:
        """Drop the per-item values kept so far (they are rebuilt on demand)."""
        self._corrections = {"image": _PerItem(), "text": _PerItem()}
        self._photo_parts = _PerItem()

    def fusion(self) -> FusionModel | None:
        """The fusion model of the index's model, loaded on first use; None when it has none."""
        with self._lock:
            if not self._fusion_loaded:
                self._fusion = self._fusion_loader()
                self._fusion_loaded = True
            return self._fusion

    def run(
        self,
        candidates: Candidates,
        target: Kind,
        options: RerankOptions,
        query_kind: Kind | None,
        bank: np.ndarray | None = None,
        floor: ScoreFloor = None,
    ) -> Ranked:
        """The hits in their final order, same shapes as the candidates' (padded with id -1).

        query_kind says what the query vectors embed: QB-Norm runs only across modalities (its banks
        are typical queries of the other kind) and when it is None; the learned fusion re-scores text
        queries for images (it was trained on captions). `bank` replaces the direction's own bank
        (the evaluation uses one without the evaluated queries). `floor` (a score, "auto" or None)
        removes candidates whose own final score is below it, before diversity reorders them.

        The candidates are ranked in blocks of `options.candidates` by first-stage rank: the first
        block is re-scored and ordered on its own, each further block after it. Asking for more
        hits only adds blocks, so a shorter list is always a prefix of a longer one (stable pages)."""
        hubness = options.hubness and query_kind != target
        fusion = self.fusion() if options.learned and target == "image" and query_kind == "text" else None
        needs_vectors = (
            hubness or fusion is not None or options.diverse is not None or options.duplicate_threshold is not None
        )
        meta = self._store.metadata.get_meta() if needs_vectors else {}
        generations = {kind: meta.get(f"generation:{kind}", "0") for kind in ("image", "text")}
        bank_key: object = None
        if not hubness:
            bank = None
        elif bank is None:
            held = self._banks.bank_and_key(target, meta)
            bank, bank_key = held if held is not None else (None, None)
        ids = candidates.ids
        stored: dict[int, np.ndarray] | None = None  # None: no stage needs the vectors
        preference: dict[int, tuple[int, ...]] | None = None
        if needs_vectors:
            unique = np.unique(ids[ids >= 0])
            stored = dict(zip(*self._store.metadata.vectors(_TABLES[target], unique.tolist()))) if len(unique) else {}
            if options.duplicate_threshold is not None and target == "image" and len(unique):
                preference = self._copy_preference(unique)
        # SQL above, outside the compute lock: other searches' NumPy and FAISS work meanwhile.
        with self._compute:
            return self._rank(
                candidates, target, options, fusion, bank, bank_key, stored, generations, floor, preference
            )

    def _copy_preference(self, ids: np.ndarray) -> dict[int, tuple[int, ...]]:
        """Sort keys of photos for choosing the copy a near-duplicate group shows: most pixels, then the
        largest file, then the oldest (capture time, else mtime), then the first indexed."""
        columns = (ImageRow.id, ImageRow.width, ImageRow.height, ImageRow.size, ImageRow.taken_at, ImageRow.mtime_ns)
        with self._store.metadata.session() as s:
            rows = s.execute(select(*columns).where(ImageRow.id.in_([int(i) for i in ids]))).all()
        return {
            int(r.id): (
                -int(r.width or 0) * int(r.height or 0),
                -int(r.size or 0),
                int(r.taken_at.timestamp() * 1e9) if r.taken_at is not None else int(r.mtime_ns or 0),
                int(r.id),
            )
            for r in rows
        }

    def _rank(
        self,
        candidates: Candidates,
        target: Kind,
        options: RerankOptions,
        fusion: FusionModel | None,
        bank: np.ndarray | None,
        bank_key: object,
        stored: dict[int, np.ndarray] | None,
        generations: dict[str, str],
        floor: ScoreFloor,
        preference: dict[int, tuple[int, ...]] | None,
    ) -> Ranked:
        ids = candidates.ids
        # Per-item values hold while the bank and the target's rows are the ones they came from.
        hub_key = (bank_key, generations.get(target)) if bank_key is not None else None
        out = Ranked.empty(ids.shape)
        block = max(1, options.candidates)
        for row, query in enumerate(candidates.queries):
            threshold = -np.inf if floor is None or floor == "auto" else float(floor)
            placed = 0
            shown: list[np.ndarray] = []  # vectors of the hits placed so far (diversity, duplicates)
            for start in range(0, ids.shape[1], block):
                block_ids = ids[row, start : start + block]
                keep = block_ids >= 0
                if stored is not None:  # a row deleted by a concurrent writer after the first stage drops out
                    keep &= np.fromiter((int(i) in stored for i in block_ids), dtype=bool, count=len(block_ids))
                cand = block_ids[keep]
                if len(cand) == 0:
                    continue
                cosines = candidates.scores[row, start : start + block][keep].astype(np.float64)
                vecs = np.stack([stored[int(i)] for i in cand]) if stored is not None else None
                final = cosines
                if bank is not None and vecs is not None:
                    final = self._normalised(query, cand, cosines, vecs, bank, target, hub_key)
                if fusion is not None and vecs is not None and start == 0:  # the fusion was fitted on the top
                    extra = (candidates.extra, row) if candidates.extra is not None else None
                    final = self._fused(fusion, query, cand, vecs, cosines, final, generations["image"], extra)
                if floor == "auto" and start == 0:  # from the first block: the same for every depth asked
                    threshold = auto_score_floor(final)
                order = np.argsort(-final, kind="stable")
                # compared as handed out (float32), so every hit's own score is at least the floor
                order = order[final[order].astype(np.float32).astype(np.float64) >= threshold]
                if len(order) == 0:  # a whole block below the floor: the list ends here, for any depth
                    out.ended[row] = True
                    break
                copies = np.zeros(len(order), dtype=np.int64)
                if vecs is not None:
                    prefer = [preference.get(int(i), (0,)) for i in cand] if preference is not None else None
                    order, copies = _diversify_and_fold(order, final, vecs, options, prefer, shown)
                n = len(order)
                out.scores[row, placed : placed + n] = final[order]
                out.ids[row, placed : placed + n] = cand[order]
                out.copies[row, placed : placed + n] = copies
                placed += n
                if vecs is not None:
                    shown.extend(vecs[order])
        return out

    def _normalised(
        self,
        query: np.ndarray,
        cand: np.ndarray,
        cosines: np.ndarray,
        vecs: np.ndarray,
        bank: np.ndarray,
        target: Kind,
        hub_key: object,
    ) -> np.ndarray:
        """QB-Norm of one query's candidates. A candidate's correction depends on the bank alone, so it
        is computed once per item, unless the query is itself in the bank (it is then left out)."""
        beta = QB_NORM_BETA[target]
        # einsum, not BLAS: a threaded matrix-vector product costs ~15x the CPU (thread wake-ups) and
        # competes with concurrent searches; this only tells whether the query is a bank entry.
        in_bank = np.einsum("ij,j->i", bank, query.astype(bank.dtype, copy=False)) >= _SAME_AS_QUERY
        if hub_key is None or in_bank.any():
            return querybank_normalise(cosines, (bank @ vecs.T)[~in_bank], beta)
        memo = self._corrections[target]
        known, missing = memo.lookup(hub_key, cand)
        if len(missing):
            fresh = querybank_correction(bank @ vecs[missing].T, beta)
            memo.remember(hub_key, cand[missing], fresh)
            known.update(zip((int(i) for i in cand[missing]), fresh))
        correction = np.array([known[int(i)] for i in cand])
        return cosines - (correction - correction.mean())

    def _fused(
        self,
        fusion: FusionModel,
        query: np.ndarray,
        cand: np.ndarray,
        vecs: np.ndarray,
        cosines: np.ndarray,
        scores: np.ndarray,
        generation: str,
        extra: tuple[CandidateFeatures, int] | None = None,
    ) -> np.ndarray:
        """Final scores after the learned fusion: the top candidates by cosine (as it was trained) get
        the fusion's score mapped linearly onto the range of their own scores (the best fused hit has
        the best of those scores, the worst the lowest, raised to the best score of the others if
        that is higher); the rest keep theirs. Unchanged when a candidate was indexed without tower
        features. `extra`: the caller's extra features and the query's row, for a model fitted with some."""
        top = np.argsort(-cosines, kind="stable")[:TOP]
        if len(top) < 2:
            return scores
        known, missing = self._photo_parts.lookup(generation, cand[top])
        if len(missing):
            wanted = cand[top][missing]
            features = self._store.metadata.tower_features(wanted.tolist())
            absent = np.array([int(i) for i in wanted if int(i) not in features], dtype=np.int64)
            if len(absent):  # remembered, so that later queries do not ask SQL again
                self._photo_parts.remember(generation, absent, [None] * len(absent))
                return scores
            fresh = photo_parts(fusion, np.stack([features[int(i)] for i in wanted]))
            self._photo_parts.remember(generation, wanted, fresh)
            known.update(zip((int(i) for i in wanted), fresh))
        values = [known[int(i)] for i in cand[top]]
        if any(value is None for value in values):
            return scores
        parts = np.stack([value for value in values if value is not None])
        hub = scores - cosines
        raw = features_from_parts(fusion, query, vecs[top], parts, hub[top], cosine=cosines[top])
        given = extra[0](extra[1], cand[top]) if extra is not None and fusion.extra else None
        fused = fusion.scores(raw, extra_columns(fusion.extra, given, len(top)) if fusion.extra else None)
        # The range: the top's own scores, raised to stay above every other candidate's (the fusion
        # decides the top's order, and the top stays ahead, as it was fitted).
        rest = np.delete(scores, top)
        low = max(float(scores[top].min()), float(rest.max()) if len(rest) else -np.inf)
        high = max(float(scores[top].max()), low)
        spread = float(fused.max() - fused.min())
        out = scores.copy()
        out[top] = low + (high - low) * (fused - fused.min()) / spread if spread > 0 else scores[top]
        return out

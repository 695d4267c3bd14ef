"""Chinese recall, fourth round: what was tried (issue 29), with the figures in benchmarks/RESULTS.md.

    python -m benchmarks.chinese_fourth_tried --data ../shared/datasets/flickr8k-1k [--final] [--shift]

Same data, split, head and pool as benchmarks/chinese_recall.py. Without --final every variant is
judged on an inner split: 150 of the 600 photos chinese_recall fits on are the validation pool, and
the head, the sense prior, the correction and every bank below are fitted on the other 450 (the
200 held-out photos are not read). --final reads the held-out 200 (fitted on the 600), --shift the
shift protocol's folds, for the variants named in FINAL only.

Variants (text -> image, R@1/5/10, pool = the evaluated photos):
  pipeline      the engine's second stage (QB-Norm + learned fusion, search/rerank) emulated on the
                same vectors, with its parts refitted on the fitted photos only (the caption bank, the
                two-hop's captions and photos, the linear projection): only the fusion's 5 shipped
                weights come from all 800 train photos (a small leak, stated with the figures)
  ensemble      several English readings of a Chinese caption (second senses of its most ambiguous
                words, jieba without HMM, jieba's search cut, the text through traditional
                characters), their tower vectors averaged with weights from the sense prior, then
                the correction
  correction    the trained correction scaled by a factor
  bridge        the Chinese training captions nearest by character 1-2-gram TF-IDF, and the mean
                vector of their photos' English captions blended in by match strength
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.chinese_distillation import (
    CaptionPairs,
    StudentConfig,
    fit_student,
    held_out_photos,
    read_caption_pairs,
)
from training.fusion import train_linear_projection
from xmodal.data import data_path
from xmodal.indexer.cache import cache_dir
from xmodal.indexer.models.chinese.student import SENTENCE_SPACE, ChineseStudent
from xmodal.indexer.models.chinese.translation import PARTICLES, Translation, Translator
from xmodal.indexer.models.embedding import load_model
from xmodal.search.rerank.fusion import TOP, FusionModel, features_from_parts, photo_parts
from xmodal.search.rerank.qbnorm import QB_NORM_BETA, querybank_correction

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chinese_recall import (  # noqa: E402
    FittedChinese,
    TextVectors,
    cached_features,
    fit_chinese,
    recall,
    shift_folds,
    unit,
)
from shift_protocol import CONCEPTS  # noqa: E402

KS = (1, 5, 10)
CANDIDATES = 100  # the engine's --candidates default: the first block the fusion re-scores
BANK = 2000


class ReadingTranslator(Translator):
    """The shipped translator with senses overridden per word and jieba's HMM switchable."""

    def __init__(self, prior, hmm: bool = True) -> None:
        super().__init__(prior)
        self.override: dict[str, str] = {}
        self.hmm = hmm
        cutter = self._cutter

        class Cutter:
            def tag(self, run: str):  # noqa: ANN202
                return cutter.tag(run, hmm)

            def cut(self, run: str):  # noqa: ANN202
                return cutter.cut(run, hmm)

            def cut_for_search(self, run: str):  # noqa: ANN202
                return cutter.cut_for_search(run, hmm)

        self._cutter = Cutter()

    def gloss(self, word: str) -> str | None:
        return self.override.get(word) or super().gloss(word)

    def ranked_senses(self, word: str) -> list[tuple[str, float]]:
        """(gloss, prior score) best first; a trained choice first, with the best score + 1."""
        senses = self.dictionary.senses(word)
        scored = sorted(((g, self.prior.score(g, r)) for r, g in enumerate(senses)), key=lambda s: -s[1])
        seen: dict[str, float] = {}
        for g, s in scored:
            seen.setdefault(g, s)
        out = list(seen.items())
        chosen = self.prior.chosen.get(word)
        if chosen is not None:
            top = out[0][1] + 1.0 if out else 0.0
            out = [(chosen, top)] + [(g, s) for g, s in out if g != chosen]
        return out


Fitted = FittedChinese


def fit_on(
    pairs: CaptionPairs, features: torch.Tensor, english: np.ndarray, vectors: TextVectors, fit: np.ndarray
) -> Fitted:
    return fit_chinese(pairs, features, english, vectors, fit, ReadingTranslator)


# ---------------------------------------------------------------- the engine's second stage


@dataclass
class Stage:
    fusion: FusionModel
    bank: np.ndarray


def stage_on(pairs: CaptionPairs, features: torch.Tensor, english: np.ndarray, f: Fitted, weights: np.ndarray) -> Stage:
    """The second stage's parts refitted on the fitted photos (only `weights` come from outside)."""
    fit = f.fit
    caps = np.flatnonzero(np.isin(pairs.english_photo, fit))
    local = {int(p): i for i, p in enumerate(fit)}
    owner = np.array([local[int(pairs.english_photo[k])] for k in caps])
    key = hashlib.sha256(fit.tobytes()).hexdigest()[:16]
    file = cache_dir() / "chinese-bench" / f"linear-{key}.npz"
    if file.is_file():
        with np.load(file) as d:
            from xmodal.search.rerank.fusion import LinearProjection

            linear = LinearProjection(d["mean"], d["scale"], d["weight"], d["bias"])
    else:
        # one view per photo (the shipped projection draws from 5 views of each photo)
        linear = train_linear_projection(features[fit], english[caps], owner, seed=0)
        np.savez(file, mean=linear.mean, scale=linear.scale, weight=linear.weight, bias=linear.bias)
    model = FusionModel(
        weights.astype(np.float64), english[caps].astype(np.float64), owner, f.photos[fit].astype(np.float64), linear
    )
    rng = np.random.default_rng(0)
    bank = english[caps][np.sort(rng.choice(len(caps), min(BANK, len(caps)), replace=False))]
    return Stage(model, bank)


def pipeline_recall(
    queries: np.ndarray,
    owner: np.ndarray,
    photos: np.ndarray,
    features: torch.Tensor,
    pool: np.ndarray,
    stage: Stage,
    learned: bool = True,
    weights: np.ndarray | None = None,
    fusion: FusionModel | None = None,
    bank: np.ndarray | None = None,
) -> tuple[float, ...]:
    """Recall through the engine's ranking (search/rerank/pipeline.py _rank, one block of CANDIDATES
    then the rest): QB-Norm on every candidate, the fusion's top TOP by cosine mapped onto their range."""
    fusion = fusion or stage.fusion
    if weights is not None:
        fusion = FusionModel(weights, fusion.train_captions, fusion.caption_photo, fusion.train_photos, fusion.linear)
    local = {int(p): i for i, p in enumerate(pool)}
    gallery = photos[pool].astype(np.float64)
    bank = stage.bank if bank is None else bank
    correction = querybank_correction(bank.astype(np.float64) @ gallery.T, QB_NORM_BETA["image"])
    parts = photo_parts(fusion, features[pool].numpy())
    hits = np.zeros(len(KS))
    for q, o in zip(unit(queries).astype(np.float64), owner):
        cos = gallery @ q
        order = np.argsort(-cos, kind="stable")
        target = local[int(o)]
        rank = 0
        for start in range(0, len(order), CANDIDATES):
            cand = order[start : start + CANDIDATES]
            c = correction[cand]
            final = cos[cand] - (c - c.mean())
            if learned and start == 0:
                top = np.argsort(-cos[cand], kind="stable")[:TOP]
                hub = final - cos[cand]
                raw = features_from_parts(
                    fusion, q, gallery[cand][top], parts[cand][top], hub[top], cosine=cos[cand][top]
                )
                fused = fusion.scores(raw)
                rest = np.delete(final, top)
                low = max(float(final[top].min()), float(rest.max()) if len(rest) else -np.inf)
                high = max(float(final[top].max()), low)
                spread = float(fused.max() - fused.min())
                if spread > 0:
                    final = final.copy()
                    final[top] = low + (high - low) * (fused - fused.min()) / spread
            where = np.flatnonzero(cand == target)
            if len(where):
                rank += int((final > final[where[0]]).sum())
                break
            rank += len(cand)
        hits += [rank < k for k in KS]
    return tuple(100.0 * hits / len(owner))


def chinese_fusion_weights(
    pairs, features, english, vectors, fit: np.ndarray, shipped: np.ndarray, folds: int = 3
) -> np.ndarray:
    """The fusion's weights refitted on Chinese queries, out of fold within `fit` (as
    training.offline_fusion does for English captions): each fold's head, correction and bank
    fitted on the other folds' photos."""
    from training.fusion import fit_fusion_weights

    perm = np.random.default_rng(2).permutation(fit)
    feats, labels = [], []
    for j in range(folds):
        ev = np.sort(perm[j::folds])
        f = fit_on(pairs, features, english, vectors, np.setdiff1d(fit, ev))
        stage = stage_on(pairs, features, english, f, shipped)
        zh = np.flatnonzero(np.isin(pairs.chinese_photo, ev))
        q = f.student.correct(f.translated[zh], [f.translations[i] for i in zh]).astype(np.float64)
        gallery = f.photos[ev].astype(np.float64)
        hub = -querybank_correction(stage.bank.astype(np.float64) @ gallery.T, QB_NORM_BETA["image"])
        parts = photo_parts(stage.fusion, features[ev].numpy())
        local = {int(p): i for i, p in enumerate(ev)}
        F_ = np.zeros((len(zh), TOP, 5))
        L_ = np.full(len(zh), -1)
        for n, i in enumerate(zh):
            top = np.argsort(-(gallery @ q[n]), kind="stable")[:TOP]
            hit = np.flatnonzero(top == local[int(pairs.chinese_photo[i])])
            L_[n] = hit[0] if len(hit) else -1
            F_[n] = features_from_parts(stage.fusion, q[n], gallery[top], parts[top], hub[top])
        feats.append(F_)
        labels.append(L_)
    return fit_fusion_weights(feats, labels)


# ---------------------------------------------------------------- ensembles of readings


@dataclass(frozen=True)
class Ensemble:
    senses: int = 0  # readings with one ambiguous word at its second sense (the most ambiguous first)
    tau: float = 1.0  # weight of such a reading: exp(-(score gap) / tau)
    chosen: bool = False  # also vary words whose sense training chose
    hmm_off: float = 0.0  # weight of jieba without HMM
    search_cut: float = 0.0  # weight of the glosses of jieba's search cut
    traditional: float = 0.0  # weight of the text through traditional characters (s2twp, then back)


def readings(
    f: Fitted, text: str, base: Translation, e: Ensemble, s2t: Callable[[str], str], plain: ReadingTranslator
) -> list[tuple[str, float]]:
    out = [(base.english or base.source, 1.0)]
    t = f.translator
    if e.senses:
        gaps = []
        for w in dict.fromkeys(base.words):
            if w in PARTICLES or (w in t.prior.chosen and not e.chosen):
                continue
            ranked = t.ranked_senses(w)
            if len(ranked) >= 2:
                gaps.append((ranked[0][1] - ranked[1][1], w, ranked[1][0]))
        for gap, w, second in sorted(gaps)[: e.senses]:
            t.override = {w: second}
            r = t.translate(text)
            t.override = {}
            out.append((r.english or r.source, math.exp(-gap / e.tau)))
    if e.hmm_off:
        r = plain.translate(text)
        out.append((r.english or r.source, e.hmm_off))
    if e.search_cut:
        s = t.simplified(text)
        words = [w for run in re.findall(r"[\u4e00-\u9fff]+", s) for w in t._cutter.cut_for_search(run)]
        glosses = [g for w in words if w not in PARTICLES and (g := t.gloss(w))]
        if glosses:
            out.append((" ".join(glosses), e.search_cut))
    if e.traditional:
        r = t.translate(s2t(text))
        out.append((r.english or r.source, e.traditional))
    return out


def ensemble_vectors(
    f: Fitted, vectors: TextVectors, rows: np.ndarray, texts: Sequence[str], e: Ensemble, strength: float = 1.0
) -> np.ndarray:
    import opencc

    conv = opencc.OpenCC("s2twp")
    plain = ReadingTranslator(f.translator.prior, hmm=False)
    per = [readings(f, texts[i], f.translations[i], e, conv.convert, plain) for i in rows]
    flat = [r for rs in per for r, _ in rs]
    vecs = unit(vectors(flat))
    out, k = [], 0
    for rs in per:
        w = np.array([x for _, x in rs])
        out.append((w[:, None] * vecs[k : k + len(rs)]).sum(0) / w.sum())
        k += len(rs)
    base = unit(np.stack(out))
    corrected = f.student.correct(base, [f.translations[i] for i in rows])
    if strength == 1.0:
        return corrected
    return unit(base + strength * (corrected - base))


# ---------------------------------------------------------------- lexical bridge


@dataclass(frozen=True)
class Bridge:
    k: int = 5
    threshold: float = 0.5  # no blend below this TF-IDF cosine of the best match
    alpha: float = 0.3  # blend weight at a perfect match (linear from the threshold)
    temperature: float = 0.05  # softmax over the k matches' TF-IDF cosines


_PUNCT = re.compile(r"[^\u4e00-\u9fffA-Za-z0-9]")


def bridge_vectors(f: Fitted, pairs: CaptionPairs, queries: np.ndarray, rows: np.ndarray, b: Bridge) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer

    fit_zh = np.flatnonzero(np.isin(pairs.chinese_photo, f.fit))
    tf = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
    bank = tf.fit_transform([_PUNCT.sub("", pairs.chinese[i]) for i in fit_zh])
    q = tf.transform([_PUNCT.sub("", pairs.chinese[i]) for i in rows])
    sims = (q @ bank.T).toarray()
    out = unit(queries).copy()
    for n, s in enumerate(sims):
        top = np.argsort(-s)[: b.k]
        best = float(s[top[0]])
        if best < b.threshold:
            continue
        w = np.exp((s[top] - best) / b.temperature)
        w /= w.sum()
        target = (w[:, None] * f.teacher[pairs.chinese_photo[fit_zh[top]]]).sum(0)
        a = b.alpha * (best - b.threshold) / max(1 - b.threshold, 1e-6)
        out[n] = out[n] + a * target
    return unit(out)


def _bigrams(t: Translation) -> list[str]:
    text = "".join(t.words)
    return ["#" + text[k : k + 2] for k in range(len(text) - 1)]


def _word_pairs(t: Translation) -> list[str]:
    words = [w for w in t.words if w not in PARTICLES]
    return [a + "|" + b for a, b in zip(words, words[1:])]


def _words(t: Translation) -> list[str]:
    return list(t.words)


def _chars(t: Translation) -> list[str]:
    return ["#" + c for c in "".join(t.words)]


FEATURE_SETS: dict[str, Callable[[Translation], list[str]]] = {
    "words and characters (shipped)": lambda t: _words(t) + _chars(t),
    "words only": _words,
    "characters only": _chars,
    "+ character bigrams": lambda t: _words(t) + _chars(t) + _bigrams(t),
    "+ adjacent word pairs": lambda t: _words(t) + _chars(t) + _word_pairs(t),
}


_FUNCTION_WORDS = frozenset(
    "a an the is are was were be being been of in on at to with and or by for from into onto its his her "
    "their there this that these those while as it he she they one some who which".split()
)


def _english_words(t: Translation) -> list[str]:
    return ["@" + w for w in re.findall(r"[a-z]+", t.english.lower()) if w not in _FUNCTION_WORDS]


def english_rows(f: Fitted, pairs: CaptionPairs, english: np.ndarray, vectors: TextVectors, zh, owner, pool):
    """The correction with features of the reading's English words too ("@dog"), so that the fitted
    photos' English captions (stripped of function words, like a word-by-word reading) can train it
    beside the Chinese captions."""
    import training.chinese_distillation as cd
    import xmodal.indexer.models.chinese.student as st

    shipped_features = st.text_features
    fit_zh = np.flatnonzero(np.isin(pairs.chinese_photo, f.fit))
    fit_en = np.flatnonzero(np.isin(pairs.english_photo, f.fit))
    stripped = [
        " ".join(w for w in re.findall(r"[a-z]+", pairs.english[i].lower()) if w not in _FUNCTION_WORDS) for i in fit_en
    ]
    en_rows = {
        "stripped": ([Translation(pairs.english[i], t, ()) for i, t in zip(fit_en, stripped)], vectors(stripped)),
        "full": ([Translation(pairs.english[i], pairs.english[i], ()) for i in fit_en], english[fit_en]),
    }
    out = {}

    def both(t: Translation) -> list[str]:
        return shipped_features(t) + _english_words(t)

    for label, extra in (
        ("+ English-word features", None),
        ("+ English-word features, + stripped English captions as rows", "stripped"),
        ("+ English-word features, + English captions as rows", "full"),
    ):
        rows = [f.translations[i] for i in fit_zh]
        vecs = f.translated[fit_zh]
        photo = pairs.chinese_photo[fit_zh]
        if extra is not None:
            rows = rows + en_rows[extra][0]
            vecs = np.concatenate([vecs, en_rows[extra][1]])
            photo = np.concatenate([photo, pairs.english_photo[fit_en]])
        cd.text_features = st.text_features = both
        try:
            s_ = fit_student(
                rows, vecs, photo, f.photos, f.teacher, f.translator.prior, SENTENCE_SPACE, StudentConfig()
            )
            v = s_.correct(f.translated[zh], [f.translations[i] for i in zh])
        finally:
            cd.text_features = st.text_features = shipped_features
        out[f"correction {label}"] = recall(v, owner, f.photos, pool)
    return out


# ---------------------------------------------------------------- pseudo-relevance feedback on the photos


def feedback(queries: np.ndarray, gallery: np.ndarray, k: int, beta: float) -> np.ndarray:
    """Each query plus beta times the mean of its k nearest gallery photos (a second search)."""
    q = unit(queries)
    scores = q @ gallery.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return unit(q + beta * gallery[top].mean(axis=1))


# ---------------------------------------------------------------- runs


def show(title: str, figures: dict[str, tuple[float, ...]]) -> None:
    print(title, flush=True)
    for name, r in figures.items():
        print(f"  {name:58s} R@1 {r[0]:5.1f}  R@5 {r[1]:5.1f}  R@10 {r[2]:5.1f}", flush=True)


ENSEMBLES = {
    "senses 2 tau 1": Ensemble(senses=2),
    "senses 4 tau 1": Ensemble(senses=4),
    "senses 4 tau 0.5": Ensemble(senses=4, tau=0.5),
    "senses 4 tau 2": Ensemble(senses=4, tau=2.0),
    "senses 4 tau 1 + chosen words": Ensemble(senses=4, chosen=True),
    "hmm off 1": Ensemble(hmm_off=1.0),
    "search cut 0.5": Ensemble(search_cut=0.5),
    "search cut 1": Ensemble(search_cut=1.0),
    "traditional 1": Ensemble(traditional=1.0),
    "senses 4 + hmm off + search cut 0.5 + traditional": Ensemble(
        senses=4, hmm_off=1.0, search_cut=0.5, traditional=1.0
    ),
}
BRIDGES = {
    f"k {k} thr {t} alpha {a}": Bridge(k=k, threshold=t, alpha=a)
    for k in (1, 5)
    for t in (0.3, 0.5, 0.7)
    for a in (0.2, 0.5, 1.0)
}


def evaluate(pairs, features, english, vectors, fit, pools, weights, variants: str, final: dict | None = None):
    f = fit_on(pairs, features, english, vectors, fit)
    stage = stage_on(pairs, features, english, f, weights)
    out = {}
    for name, pool in pools.items():
        zh = np.flatnonzero(np.isin(pairs.chinese_photo, pool))
        en = np.flatnonzero(np.isin(pairs.english_photo, pool))
        owner = pairs.chinese_photo[zh]
        base = f.student.correct(f.translated[zh], [f.translations[i] for i in zh])
        figs: dict[str, tuple[float, ...]] = {
            "english, first stage": recall(english[en], pairs.english_photo[en], f.photos, pool),
            "chinese (shipped path), first stage": recall(base, owner, f.photos, pool),
        }
        if "pipeline" in variants:
            P = functools.partial(pipeline_recall, photos=f.photos, features=features, pool=pool, stage=stage)
            figs["english, QB-Norm"] = P(english[en], pairs.english_photo[en], learned=False)
            figs["english, QB-Norm + fusion (default)"] = P(english[en], pairs.english_photo[en])
            figs["chinese, QB-Norm"] = P(base, owner, learned=False)
            figs["chinese, QB-Norm + fusion (default)"] = P(base, owner)
            for j, feat in enumerate(("hub", "two_hop", "conse", "linear_cosine"), start=1):
                w = weights.copy()
                w[j] = 0.0
                figs[f"chinese, fusion without {feat}"] = P(base, owner, weights=w)
                if feat == "two_hop":
                    figs[f"english, fusion without {feat}"] = P(english[en], pairs.english_photo[en], weights=w)
            # a two-hop through the fitted photos' Chinese captions (their Chinese-path vectors)
            fit_zh = np.flatnonzero(np.isin(pairs.chinese_photo, f.fit))
            local = {int(p): i for i, p in enumerate(f.fit)}
            zh_bank = f.student.correct(f.translated[fit_zh], [f.translations[i] for i in fit_zh]).astype(np.float64)
            zh_fusion = FusionModel(
                weights,
                zh_bank,
                np.array([local[int(p)] for p in pairs.chinese_photo[fit_zh]]),
                stage.fusion.train_photos,
                stage.fusion.linear,
            )
            figs["chinese, fusion with a Chinese-caption two-hop"] = P(base, owner, fusion=zh_fusion)
            pick = np.sort(np.random.default_rng(0).choice(len(zh_bank), min(BANK, len(zh_bank)), replace=False))
            figs["chinese, QB-Norm with a Chinese-caption bank"] = P(base, owner, learned=False, bank=zh_bank[pick])
            figs["chinese, default with a Chinese-caption bank"] = P(base, owner, bank=zh_bank[pick])
            figs["chinese, default with both Chinese banks"] = P(base, owner, bank=zh_bank[pick], fusion=zh_fusion)
            figs["chinese, first stage + fusion (no QB-Norm)"] = P(base, owner, bank=np.zeros((1, zh_bank.shape[1])))
        if "correction" in variants:
            for s in (0.5, 1.5, 2.0):
                v = ensemble_vectors(f, vectors, zh, pairs.chinese, Ensemble(), strength=s)
                figs[f"correction x{s}"] = recall(v, owner, f.photos, pool)
        if "ensemble" in variants:
            for label, e in ENSEMBLES.items():
                figs[f"ensemble: {label}"] = recall(
                    ensemble_vectors(f, vectors, zh, pairs.chinese, e), owner, f.photos, pool
                )
        if "bridge" in variants:
            for label, b in BRIDGES.items():
                figs[f"bridge: {label}"] = recall(bridge_vectors(f, pairs, base, zh, b), owner, f.photos, pool)
        if "zh-weights" in variants:
            w_zh = chinese_fusion_weights(pairs, features, english, vectors, f.fit, weights)
            print("fusion weights fitted on Chinese queries: " + " ".join(f"{x:+.3f}" for x in w_zh), flush=True)
            P = functools.partial(pipeline_recall, photos=f.photos, features=features, pool=pool, stage=stage)
            figs["chinese, QB-Norm + fusion (default)"] = P(base, owner)
            figs["chinese, QB-Norm + fusion with weights fitted on Chinese"] = P(base, owner, weights=w_zh)
        if "features" in variants:
            import training.chinese_distillation as cd
            import xmodal.indexer.models.chinese.student as st

            shipped_features = st.text_features
            for label, fn in FEATURE_SETS.items():
                cd.text_features = st.text_features = fn
                try:
                    v = f.fit_correction(pairs).correct(f.translated[zh], [f.translations[i] for i in zh])
                finally:
                    cd.text_features = st.text_features = shipped_features
                figs[f"correction features: {label}"] = recall(v, owner, f.photos, pool)
        if "diagnose" in variants:
            words = [
                [w for w in re.findall(r"[a-z]+", pairs.english[i].lower()) if w not in _FUNCTION_WORDS] for i in en
            ]
            rng = np.random.default_rng(0)
            own = pairs.english_photo[en]
            figs["english without function words"] = recall(vectors([" ".join(w) for w in words]), own, f.photos, pool)
            figs["english without function words, words shuffled"] = recall(
                vectors([" ".join(rng.permutation(w)) for w in words]), own, f.photos, pool
            )
            for n in (3, 4, 5):
                firsts = [" ".join(w[:n]) for w in words]
                figs[f"english, first {n} content words"] = recall(vectors(firsts), own, f.photos, pool)
            length = np.array([len(f.translations[i].english.split()) for i in zh])
            print(
                f"words per reading: Chinese {length.mean():.1f}, English stripped "
                f"{np.mean([len(w) for w in words]):.1f}",
                flush=True,
            )
        if "english-rows" in variants:
            figs.update(english_rows(f, pairs, english, vectors, zh, owner, pool))
        if "feedback" in variants:
            gallery = f.photos[pool]
            for k in (1, 3, 5, 10):
                for beta in (0.1, 0.3, 0.5):
                    figs[f"photo feedback: k {k} beta {beta}"] = recall(
                        feedback(base, gallery, k, beta), owner, f.photos, pool
                    )
        if "bagging" in variants:
            tables = [f.student.table]
            for seed in range(1, 5):
                tables.append(f.fit_correction(pairs, seed=seed).table)
                bag = ChineseStudent(f.student.prior, f.student.vocabulary, np.mean(tables, axis=0), f.student.space)
                figs[f"correction averaged over {len(tables)} seeds"] = recall(
                    bag.correct(f.translated[zh], [f.translations[i] for i in zh]), owner, f.photos, pool
                )
        if final:
            for label, make in final.items():
                v = make(f, pairs, vectors, zh, base)
                figs[f"kept: {label}, first stage"] = recall(v, owner, f.photos, pool)
                if "pipeline" in variants:
                    figs[f"kept: {label}, QB-Norm + fusion"] = pipeline_recall(
                        v, owner, f.photos, features, pool, stage
                    )
        out[name] = figs
    return out


def write_pairs(pairs: CaptionPairs, held: np.ndarray, folder: Path) -> None:
    """`image,caption` CSVs of the held-out photos for `xmodal eval` (the product's whole pipeline)."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    for name, captions, owner in (
        ("zh", pairs.chinese, pairs.chinese_photo),
        ("en", pairs.english, pairs.english_photo),
    ):
        with open(folder / f"held_{name}.csv", "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["image", "caption"])
            out.writerows([pairs.photos[o], c] for c, o in zip(captions, owner) if int(o) in set(held.tolist()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/flickr8k-1k"))
    ap.add_argument("--variants", default="pipeline,correction,ensemble,bridge")
    ap.add_argument("--final", action="store_true", help="read the 200 held-out photos (fitted on the 600)")
    ap.add_argument("--shift", action="store_true", help="the shift protocol's folds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--write-pairs",
        type=Path,
        help="write the held-out photos' Chinese and English captions as xmodal eval pairs (held_zh.csv, "
        "held_en.csv) into this folder, and stop",
    )
    ap.add_argument("--inner-seed", type=int, default=1, help="which 150 of the 600 fitted photos validate")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = read_caption_pairs(args.data)
    model = load_model("xmodal-lite", device="cpu")
    cache = cache_dir() / "chinese-bench"
    features, english = cached_features(args.data, pairs, model)
    vectors = TextVectors(model, cache / "text-vectors.npz")
    weights = FusionModel.load(data_path("offline_fusion.npz")).weights
    held = held_out_photos(len(pairs.photos), 200, 0)
    if args.write_pairs:
        write_pairs(pairs, held, args.write_pairs)
        return
    fitted = np.setdiff1d(np.arange(len(pairs.photos)), held)
    if not args.final and not args.shift:
        rng = np.random.default_rng(args.inner_seed)
        val = np.sort(rng.choice(fitted, 150, replace=False))
        figs = evaluate(
            pairs, features, english, vectors, np.setdiff1d(fitted, val), {"val": val}, weights, args.variants
        )
        show(
            f"inner split (seed {args.inner_seed}): 150 of the 600 fitted photos, "
            "fitted on the other 450; pool = the 150",
            figs["val"],
        )
    if args.final:
        figs = evaluate(pairs, features, english, vectors, fitted, {"held": held}, weights, args.variants, FINAL)
        show("held-out 200 photos, fitted on the 600; pool = the 200", figs["held"])
    if args.shift:
        totals: dict[str, dict[str, list[tuple[float, ...]]]] = {"held-out concept": {}, "in-dist": {}}
        for _, fit_fold, concept, indist in shift_folds(pairs, 0):
            fold = evaluate(
                pairs,
                features,
                english,
                vectors,
                fit_fold,
                {"held-out concept": concept, "in-dist": indist},
                weights,
                args.variants,
                FINAL,
            )
            for kind, figs in fold.items():
                for method, r in figs.items():
                    totals[kind].setdefault(method, []).append(r)
        for kind, by_method in totals.items():
            show(
                f"shift, macro average over {len(CONCEPTS)} concepts: {kind}",
                {m: tuple(float(np.mean(c)) for c in zip(*rs)) for m, rs in by_method.items()},
            )


FINAL: dict[str, Callable[..., np.ndarray]] = {}


if __name__ == "__main__":
    main()

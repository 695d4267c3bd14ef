"""Chinese caption -> photo recall on train photos the Chinese path never fitted on, beside English.

    python -m benchmarks.chinese_recall --data ../shared/datasets/flickr8k-1k [--held 200] [--shift]

flickr8k-1k has Chinese captions for its 800 train photos only. A fixed set of them (--held, by
photo, seed 0) is held out from EVERYTHING fitted here: a projection head is trained on the other
photos exactly as the shipped one is (its config, seed 0), so that neither the photos' vectors nor
the Chinese student have seen the held-out photos or their captions (the shipped head has: on it,
English recall of these photos is far above the test figure). Pool: the held-out photos.
Reported, first stage (cosine), text -> image recall@1/5/10 of
  english           the English captions of the same photos
  english shortest  the shortest English caption of each photo (one a photo: Chinese captions are short)
  chinese raw       Chinese straight into the English tower (the state before the Chinese path)
  first sense       jieba + each word's first CC-CEDICT sense (the issue's baseline)
  translation       the Chinese path's translation (sense choice by the caption prior, word order)
  translation+student  plus the trained correction (the shipped path)
and the p50 latency of one Chinese query through the exported text encoder (onnxruntime), after
warm-up. --shift: the same for concepts held out as in benchmarks/shift_protocol.py (a head and a
student per concept, fitted without any photo whose English captions mention it).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.chinese_distillation import (
    CaptionPairs,
    StudentConfig,
    fit_prior,
    fit_student,
    held_out_photos,
    read_caption_pairs,
    text_tower_vectors,
)
from xmodal.indexer.cache import cache_dir
from xmodal.indexer.models.chinese.student import SENTENCE_SPACE, ChineseStudent
from xmodal.indexer.models.chinese.translation import Translation, Translator
from xmodal.indexer.models.embedding import EmbeddingModel, load_model
from xmodal.indexer.models.head import ProjectionHead, train_head

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shift_protocol import CONCEPTS, POOL  # noqa: E402

KS = (1, 5, 10)


class TextVectors:
    """The English tower's vectors of texts, cached on disk by text (the runs share most texts)."""

    def __init__(self, model: EmbeddingModel, file: Path) -> None:
        self.model, self.file = model, file
        self.known: dict[str, np.ndarray] = {}
        if file.is_file():
            with np.load(file) as data:
                self.known = dict(zip(map(str, data["texts"]), data["vectors"]))

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.known})
        if missing:
            self.known.update(zip(missing, text_tower_vectors(self.model, missing)))
            self.file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(self.file, texts=np.array(list(self.known)), vectors=np.stack(list(self.known.values())))
        return np.stack([self.known[t] for t in texts])


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def recall(queries: np.ndarray, owner: np.ndarray, photos: np.ndarray, pool: np.ndarray) -> tuple[float, ...]:
    """Text -> image recall@k with `pool` (photo indices) as the whole gallery."""
    local = {int(p): i for i, p in enumerate(pool)}
    target = np.array([local[int(o)] for o in owner])
    scores = unit(queries) @ unit(photos[pool]).T
    rank = (scores > scores[np.arange(len(queries)), target][:, None]).sum(axis=1)
    return tuple(100.0 * float((rank < k).mean()) for k in KS)


def dev_photo_vectors(features: torch.Tensor, pairs: CaptionPairs, english: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Photo vectors from a head trained like the shipped one on the `fit` photos only."""
    shipped = ProjectionHead.load(str(load_model("xmodal-lite").spec.head_files[0]))
    keep = np.isin(pairs.english_photo, fit)
    local = {int(p): i for i, p in enumerate(fit)}
    owners = torch.tensor([local[int(o)] for o in pairs.english_photo[keep]])
    key = hashlib.sha256(fit.tobytes() + str(shipped.config).encode()).hexdigest()[:16]
    file = cache_dir() / "chinese-bench" / f"head-{key}.pt"
    if file.is_file():
        head = ProjectionHead.load(str(file))
    else:
        head = train_head(features[fit], torch.tensor(english[keep]), owners, shipped.config, seed=0)
        file.parent.mkdir(parents=True, exist_ok=True)
        head.save(str(file))
        head = ProjectionHead.load(str(file))  # the same stored weights whether cached or not
    with torch.no_grad():
        return unit(head.eval().project_images(features).numpy())


def cached_features(data: Path, pairs: CaptionPairs, model: EmbeddingModel) -> tuple[torch.Tensor, np.ndarray]:
    """The photos' tower features and the English captions' tower vectors, cached per data folder."""
    cache = cache_dir() / "chinese-bench"
    file = cache / f"features-{hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:12]}.pt"
    if file.is_file():
        features, english = torch.load(file, weights_only=False)
        return features, english
    with torch.inference_mode():
        features = torch.cat(
            [
                model.towers.image_features(
                    torch.stack([model.image_transform(Image.open(data / "images" / n).convert("RGB")) for n in chunk])
                ).float()
                for chunk in (pairs.photos[b : b + 16] for b in range(0, len(pairs.photos), 16))
            ]
        )
    english = text_tower_vectors(model, pairs.english)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save((features, english), file)
    return features, english


def shift_folds(pairs: CaptionPairs, seed: int) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(concept, photos to fit on, the concept's photos, in-distribution photos) of each concept
    held out as in benchmarks/shift_protocol.py: nothing fitted has a photo whose English
    captions mention the concept."""
    captions_of: list[list[str]] = [[] for _ in pairs.photos]
    for c, o in zip(pairs.english, pairs.english_photo):
        captions_of[o].append(c)
    for k, (name, pattern) in enumerate(CONCEPTS.items()):
        rx = re.compile(pattern, re.I)
        mentions = np.array([sum(bool(rx.search(c)) for c in caps) for caps in captions_of])
        rng = np.random.default_rng([seed, k])
        rest, concept = np.flatnonzero(mentions == 0), np.flatnonzero(mentions >= 1)
        concept = np.sort(rng.choice(concept, min(POOL, len(concept)), replace=False))
        indist = np.sort(rng.choice(rest, len(concept), replace=False))
        yield name, np.setdiff1d(rest, indist), concept, indist


def first_sense(translator: Translator, text: str) -> str:
    """The baseline: jieba's words, each word's first dictionary sense, nothing else."""
    words = translator._cutter.cut(translator.simplified(text))
    return " ".join(s[0] for w in words if (s := translator.dictionary.senses(w)))


@dataclass
class FittedChinese:
    """The Chinese path fitted on the `fit` photos only: their photo vectors (a development head),
    the sense prior and translator, every caption's translation and its tower vector, each photo's
    English teacher vector and the trained correction."""

    fit: np.ndarray
    photos: np.ndarray
    translator: Translator
    translations: list[Translation]
    translated: np.ndarray
    teacher: np.ndarray
    student: ChineseStudent = field(init=False)

    def fit_correction(self, pairs: CaptionPairs, seed: int = 0, config: StudentConfig | None = None) -> ChineseStudent:
        """The correction fitted again on the same captions (another seed, another setting, or with
        `text_features` replaced by the caller)."""
        fit_zh = np.flatnonzero(np.isin(pairs.chinese_photo, self.fit))
        return fit_student(
            [self.translations[i] for i in fit_zh],
            self.translated[fit_zh],
            pairs.chinese_photo[fit_zh],
            self.photos,
            self.teacher,
            self.translator.prior,
            SENTENCE_SPACE,
            config or StudentConfig(),
            seed=seed,
        )


def fit_chinese(
    pairs: CaptionPairs,
    features: torch.Tensor,
    english: np.ndarray,
    vectors: TextVectors,
    fit: np.ndarray,
    translator_type: type[Translator] = Translator,
) -> FittedChinese:
    """Fit the Chinese path as training.train_chinese does, on the `fit` photos only."""
    photos = dev_photo_vectors(features, pairs, english, fit)
    fit_en = np.flatnonzero(np.isin(pairs.english_photo, fit))
    fit_zh = np.flatnonzero(np.isin(pairs.chinese_photo, fit))
    prior = fit_prior(
        [pairs.chinese[i] for i in fit_zh],
        pairs.chinese_photo[fit_zh],
        [pairs.english[i] for i in fit_en],
        pairs.english_photo[fit_en],
    )
    translator = translator_type(prior)
    translations = [translator.translate(c) for c in pairs.chinese]
    translated = vectors([t.english or t.source for t in translations])
    teacher = unit(np.stack([english[pairs.english_photo == p].mean(axis=0) for p in range(len(pairs.photos))]))
    fitted = FittedChinese(fit, photos, translator, translations, translated, teacher)
    fitted.student = fitted.fit_correction(pairs)
    return fitted


def evaluate(
    pairs: CaptionPairs,
    features: torch.Tensor,
    english: np.ndarray,
    vectors: TextVectors,
    fit: np.ndarray,
    pools: dict[str, np.ndarray],
) -> dict[str, dict[str, tuple[float, ...]]]:
    f = fit_chinese(pairs, features, english, vectors, fit)
    photos, translated = f.photos, f.translated
    out = {}

    def words_of(i: int) -> int:
        return len(pairs.english[i].split())

    for name, pool in pools.items():
        zh = np.flatnonzero(np.isin(pairs.chinese_photo, pool))
        en = np.isin(pairs.english_photo, pool)
        owner = pairs.chinese_photo[zh]
        texts = [pairs.chinese[i] for i in zh]
        shortest = np.array([min(np.flatnonzero(pairs.english_photo == p), key=words_of) for p in pool])
        out[name] = {
            "english": recall(english[en], pairs.english_photo[en], photos, pool),
            "english shortest": recall(english[shortest], pairs.english_photo[shortest], photos, pool),
            "chinese raw": recall(vectors(texts), owner, photos, pool),
            "first sense": recall(vectors([first_sense(f.translator, t) for t in texts]), owner, photos, pool),
            "translation": recall(translated[zh], owner, photos, pool),
            "translation+student": recall(
                f.student.correct(translated[zh], [f.translations[i] for i in zh]), owner, photos, pool
            ),
        }
    return out


def latency(model: EmbeddingModel, texts: list[str]) -> tuple[float, float, float]:
    """p50 ms of one query through the exported text encoder (Chinese captions; an English query),
    and of the Chinese path's own share (translation and correction, without the tower)."""
    from xmodal.indexer.models.query_encoders import QueryTextEncoder, export_text_encoder

    sidecar = export_text_encoder(model)
    encoder: QueryTextEncoder | EmbeddingModel = QueryTextEncoder(sidecar, threads=1) if sidecar else model
    encoder.embed_texts([texts[0]])  # loads the dictionary and the student
    times = {}
    for name, queries in (("chinese", texts[:200]), ("english", ["a dog running on the beach"] * 50)):
        spent = []
        for q in queries:
            t0 = time.perf_counter()
            encoder.embed_texts([q])
            spent.append(1000 * (time.perf_counter() - t0))
        times[name] = statistics.median(spent)
    from xmodal.indexer.models.chinese import chinese_path

    path, spent = chinese_path(), []
    assert path.student is not None
    one = np.zeros((1, path.student.dim), dtype=np.float32)
    for q in texts[:200]:
        t0 = time.perf_counter()
        path.student.correct(one, [path.translate(q)])
        spent.append(1000 * (time.perf_counter() - t0))
    return times["chinese"], times["english"], statistics.median(spent)


def show(title: str, figures: dict[str, tuple[float, ...]]) -> None:
    print(title)
    for name, r in figures.items():
        print(f"  {name:20s} R@1 {r[0]:5.1f}  R@5 {r[1]:5.1f}  R@10 {r[2]:5.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/flickr8k-1k"))
    ap.add_argument("--held", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shift", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = read_caption_pairs(args.data)
    model = load_model("xmodal-lite", device="cpu")
    cache = cache_dir() / "chinese-bench"
    features, english = cached_features(args.data, pairs, model)
    vectors = TextVectors(model, cache / "text-vectors.npz")

    held = held_out_photos(len(pairs.photos), args.held, args.seed)
    fit = np.setdiff1d(np.arange(len(pairs.photos)), held)
    figures = evaluate(pairs, features, english, vectors, fit, {"held": held})["held"]
    show(
        f"{args.held} held-out train photos ({(np.isin(pairs.chinese_photo, held)).sum()} Chinese captions), "
        f"pool = those {args.held} photos; first stage",
        figures,
    )

    if args.shift:
        totals: dict[str, dict[str, list[tuple[float, ...]]]] = {"held-out concept": {}, "in-dist": {}}
        for name, fit_fold, concept, indist in shift_folds(pairs, args.seed):
            fold = evaluate(
                pairs, features, english, vectors, fit_fold, {"held-out concept": concept, "in-dist": indist}
            )
            for kind, figs in fold.items():
                show(f"concept {name}: {kind}, pool {len(concept)}", figs)
                for method, r in figs.items():
                    totals[kind].setdefault(method, []).append(r)
        for kind, by_method in totals.items():
            show(
                f"shift, macro average over {len(CONCEPTS)} concepts: {kind}",
                {m: tuple(float(np.mean(c)) for c in zip(*rs)) for m, rs in by_method.items()},
            )

    zh_ms, en_ms, own_ms = latency(model, pairs.chinese)
    print(
        f"query latency p50 (exported text encoder, one thread): Chinese {zh_ms:.1f} ms, English {en_ms:.1f} ms; "
        f"the Chinese path's own share (translation + correction) {own_ms:.2f} ms"
    )


if __name__ == "__main__":
    main()

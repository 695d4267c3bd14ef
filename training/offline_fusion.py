"""Train the shipped fusion reranker (data/offline_fusion.npz) on the flickr8k-1k TRAIN split.

    python -m training.offline_fusion --data ../shared/datasets/flickr8k-1k --out data/offline_fusion.npz
    python -m training.offline_fusion --data ../shared/datasets/flickr8k-1k --model xmodal-lite-duo \
        --out data/offline_duo_fusion.npz

Only the 800 train photos and their 4,000 captions are read (the test split is not touched).
  1. Tower features (centre view + 4 augmentation views) and caption features, cached on disk.
  2. 5 folds of 160 photos: per fold a projection head and the linear projection of linear_cosine
     (augmentation views, against the fold head's caption vectors) on the other 640 photos; each
     held-out caption is a query against the fold's 160 photos; its top TOP by cosine get
     search.fusion features (out of fold, as at search time on unseen photos).
  3. Weights fitted on all folds; reported: leave-one-fold-out R@1 change over the first stage
     (per fold, pooled, per feature dropped).
  4. Shipped: linear projection on all 800 photos, training captions/photos in the shipped head's
     space (data/offline_head.pt), the weights of step 3.
Deterministic for a given --seed and --threads.

Choices, by the pooled leave-one-fold-out R@1 gain averaged over seeds 0/1/2 (per seed in brackets);
all rows but the last had a sixth feature, "words" (Σ over the query's words of log p(word | photo) / p(word),
from a linear multi-label word model on the tower features):
  without linear_cosine                                       +2.76 (+2.27 +2.90 +3.10)
  with linear_cosine (input dropout 0.85)                     +3.40 (+3.48 +3.28 +3.45)
  with linear_cosine (input dropout 0.9)                      +3.71 (+4.00 +3.50 +3.63)
  ... and a 3-seed word-model average                         +3.52 (+3.78 +3.17 +3.60)
  a 3-seed word-model average without linear_cosine           +2.88 (+2.17 +3.08 +3.38)
  TOP 10 / 30, fit L2 0.03 / 0.3: within ±0.15 of TOP 20, L2 0.1, no consistent winner (kept 20, 0.1)
  word model on the augmentation views instead of the centre view: seed 0 +1.70 vs +2.28 (before linear_cosine)
  with linear_cosine (input dropout 0.9), without words, shipped  +3.71 (+3.82 +3.55 +3.77)
Once linear_cosine was in, words added nothing (pooled gain 3.713 without vs 3.708 with, seed-averaged),
so it was dropped: the fusion no longer needs the query's text.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.fusion import (
    fit_fusion_weights,
    train_linear_projection,
)
from training.offline_head import read_dataset
from xmodal.indexer.models.embedding import load_head
from xmodal.indexer.models.head import HeadConfig, ProjectionHead, train_head
from xmodal.indexer.models.offline_towers import OfflineTowers, build_offline_towers
from xmodal.indexer.models.preprocess import OFFLINE_PREPROCESSING
from xmodal.indexer.models.spec import OFFLINE_DEFAULT, parse_model_spec, towers_fingerprint
from xmodal.search.rerank.fusion import (
    FEATURES,
    TOP,
    FusionModel,
    features_from_parts,
    photo_parts,
    standardise,
)
from xmodal.search.rerank.qbnorm import QB_NORM_BETA, querybank_correction
from xmodal.search.training.head import cached

CACHE_VERSION = "fusion-features/3"  # bump when the views or the caption set change (the towers are in the key)
VIEWS = ("centre", "squash", "first", "last", "flip")  # view 0 is what the index stores
FOLDS = 5
BANK = 2000  # caption bank of the hub feature (as QB-Norm's query bank)


IMAGE_SIZE = OFFLINE_PREPROCESSING.size


def view_pixels(im, normalise) -> torch.Tensor:
    """(len(VIEWS), 3, 224, 224): centre crop, squash, first and last crop, flipped centre crop."""
    from torchvision.transforms import functional as TF

    im = im.convert("RGB")
    bicubic = TF.InterpolationMode.BICUBIC
    short = TF.resize(im, IMAGE_SIZE, interpolation=bicubic)  # as towers.image_transform()
    w, h = short.size
    centre = TF.center_crop(short, IMAGE_SIZE)
    views = [
        centre,
        TF.resize(im, [IMAGE_SIZE, IMAGE_SIZE], interpolation=bicubic),
        short.crop((0, 0, IMAGE_SIZE, IMAGE_SIZE)),  # top / left
        short.crop((w - IMAGE_SIZE, h - IMAGE_SIZE, w, h)),  # bottom / right
        TF.hflip(centre),
    ]
    return torch.stack([normalise(TF.to_tensor(v)) for v in views])


def compute_features(
    towers: OfflineTowers, data: str, names: list[str], captions: list[str]
) -> dict[str, torch.Tensor]:
    from PIL import Image
    from torchvision import transforms as T

    normalise = T.Normalize(OFFLINE_PREPROCESSING.mean, OFFLINE_PREPROCESSING.std)
    t0 = time.time()
    chunks = []
    for b in range(0, len(names), 16):
        pixels = torch.cat(
            [view_pixels(Image.open(os.path.join(data, "images", n)), normalise) for n in names[b : b + 16]]
        )
        chunks.append(towers.image_features(pixels).float().reshape(-1, len(VIEWS), towers.image_dim))
    t_img = time.time() - t0
    t0 = time.time()
    text = towers.text_features(captions).float()
    print(
        f"  computed: {len(names)} photos x {len(VIEWS)} views in {t_img:.1f}s, "
        f"{len(captions)} captions in {time.time() - t0:.1f}s",
        flush=True,
    )
    return {"image": torch.cat(chunks), "text": text}


def cache_file(data: str, model: str = OFFLINE_DEFAULT) -> Path:
    """Where an offline model's features of the data set are cached: keyed by its towers (weights
    and prior, `towers_fingerprint`), the views and the data set's folder."""
    from xmodal.indexer.cache import cache_dir as xmodal_cache

    text = f"{CACHE_VERSION}|{towers_fingerprint(parse_model_spec(model))}|{os.path.abspath(data)}"
    key = hashlib.sha256(text.encode()).hexdigest()[:24]
    return xmodal_cache() / "features" / f"fusion-{key}.pt"


@dataclass
class Fold:
    features: np.ndarray  # (q, TOP, F)
    labels: np.ndarray  # (q,) position of the query's photo in its top TOP, or -1


def unit(x: torch.Tensor) -> np.ndarray:
    a = x.double().numpy()
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-8)


def project(head: ProjectionHead, images: torch.Tensor, texts: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        return unit(head.project_images(images)), unit(head.project_texts(texts))


def fold_candidates(
    ev: np.ndarray,
    tr: np.ndarray,
    image: torch.Tensor,
    text: torch.Tensor,
    owner: np.ndarray,
    seed: int,
    fold: int,
    config: HeadConfig,
) -> tuple[Fold, dict[str, float]]:
    """Fusion features of each eval caption's top TOP eval photos, with everything trained on tr only;
    the fold's head is built like the shipped one (config: its HeadConfig, prior mix included)."""
    times: dict[str, float] = {}
    t0 = time.time()
    tr_caps = np.flatnonzero(np.isin(owner, tr))
    ev_caps = np.flatnonzero(np.isin(owner, ev))
    tr_pos = {int(p): j for j, p in enumerate(tr)}
    tr_owner = np.array([tr_pos[int(owner[k])] for k in tr_caps])
    centre = image[:, 0]
    head = train_head(centre[tr], text[tr_caps], torch.from_numpy(tr_owner), config, seed=seed)
    times["head"] = time.time() - t0

    train_photos, train_captions = project(head, centre[tr], text[tr_caps])
    t0 = time.time()
    linear = train_linear_projection(image[tr], train_captions, tr_owner, seed=seed)
    times["linear"] = time.time() - t0

    t0 = time.time()
    photos, queries = project(head, centre[ev], text[ev_caps])
    rng = np.random.default_rng([seed, fold])
    bank = train_captions[np.sort(rng.choice(len(train_captions), min(BANK, len(train_captions)), replace=False))]
    hub = -querybank_correction(bank @ photos.T, QB_NORM_BETA["image"])  # (160,), as the engine's QB-Norm
    ev_pos = {int(p): j for j, p in enumerate(ev)}
    own = np.array([ev_pos[int(owner[k])] for k in ev_caps])
    tower = centre[ev].numpy()  # the index stores the centre view only
    model = FusionModel(np.eye(len(FEATURES))[0], train_captions, tr_owner, train_photos, linear)
    feats = np.zeros((len(ev_caps), TOP, len(FEATURES)))
    labels = np.full(len(ev_caps), -1)
    scores = queries @ photos.T
    parts = photo_parts(model, tower)  # query-independent: once per photo, as at search time
    for q in range(len(ev_caps)):
        top = np.argsort(-scores[q], kind="stable")[:TOP]
        hit = np.flatnonzero(top == own[q])
        labels[q] = hit[0] if len(hit) else -1
        feats[q] = features_from_parts(model, queries[q], photos[top], parts[top], hub[top])
    times["features"] = time.time() - t0
    return Fold(feats, labels), times


def correct(features: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(q,) bool: the query's photo is in the top TOP and its score is strictly the highest (ties count against)."""
    scores = standardise(features) @ weights
    own = np.take_along_axis(scores, np.maximum(labels, 0)[:, None], 1)[:, 0]
    beaten = (scores >= own[:, None]).sum(1) > 1  # another candidate scores at least as high
    return (labels >= 0) & ~beaten


def first_stage_correct(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """R@1 of the first stage: the raw cosine (column 0); the top TOP holds the best of the pool."""
    weights = np.eye(features.shape[-1])[0]
    scores = features @ weights
    own = np.take_along_axis(scores, np.maximum(labels, 0)[:, None], 1)[:, 0]
    return (labels >= 0) & ((scores >= own[:, None]).sum(1) == 1)


def leave_one_fold_out(folds: list[Fold], columns: list[int]) -> tuple[list[tuple[float, float]], float, float]:
    """Per fold (base R@1, fused R@1) with weights fitted on the other folds; pooled base and fused R@1."""
    per_fold, base_all, fused_all = [], [], []
    for f, fold in enumerate(folds):
        others = [g for g in range(len(folds)) if g != f]
        w = fit_fusion_weights([folds[g].features[..., columns] for g in others], [folds[g].labels for g in others])
        base = first_stage_correct(fold.features, fold.labels)
        fused = correct(fold.features[..., columns], fold.labels, w)
        per_fold.append((100 * base.mean(), 100 * fused.mean()))
        base_all.append(base)
        fused_all.append(fused)
    return per_fold, 100 * np.concatenate(base_all).mean(), 100 * np.concatenate(fused_all).mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/flickr8k-1k")
    ap.add_argument("--out", default="data/offline_fusion.npz")
    ap.add_argument("--model", default="xmodal-lite", help="an offline model: xmodal-lite or xmodal-lite-duo")
    ap.add_argument("--head", help="the projection head whose space the index has (default: the one the model ships)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare", help="a fusion file whose weights are also scored on the folds")
    ap.add_argument("--no-ablation", action="store_true", help="skip the per-feature ablation")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    t_start = time.time()

    names, split, all_captions, cap_names = read_dataset(args.data)
    train_names = [n for n in names if split[n] == "train"]  # sorted; the test split is never read
    pos = {n: i for i, n in enumerate(train_names)}
    keep = [k for k, n in enumerate(cap_names) if n in pos]
    captions = [all_captions[k] for k in keep]
    owner = np.array([pos[cap_names[k]] for k in keep])
    print(f"{len(train_names)} train photos, {len(captions)} captions", flush=True)

    t0 = time.time()
    spec = parse_model_spec(args.model)
    backbones = spec.capabilities.backbones
    heads = [Path(args.head)] if args.head else list(spec.head_files)
    feature_file = cache_file(args.data, args.model)

    def compute() -> dict[str, torch.Tensor]:
        return compute_features(build_offline_towers(backbones), args.data, train_names, captions)

    feats = cached(feature_file, compute)
    image, text = feats["image"].float(), feats["text"].float()  # (800, views, 1664), (4000, 384)
    if image.shape[:2] != (len(train_names), len(VIEWS)) or len(text) != len(captions):
        raise SystemExit(f"stale feature cache {feature_file}: delete it")
    print(
        f"features {tuple(image.shape)} + {tuple(text.shape)} in {time.time() - t0:.1f}s ({feature_file})",
        flush=True,
    )

    perm = np.random.default_rng(args.seed).permutation(len(train_names))
    shipped = load_head(heads, "cpu")
    config = shipped.config  # fold heads are built as the shipped head was
    folds: list[Fold] = []
    for f in range(FOLDS):
        t0 = time.time()
        ev = np.sort(perm[f::FOLDS])
        tr = np.sort(np.setdiff1d(perm, ev))
        fold, times = fold_candidates(ev, tr, image, text, owner, args.seed, f, config)
        folds.append(fold)
        print(
            f"fold {f}: {len(tr)} train / {len(ev)} eval photos, {len(fold.labels)} queries, "
            f"photo in top {TOP}: {100 * (fold.labels >= 0).mean():.1f}%  ("
            + ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
            + f"; {time.time() - t0:.0f}s)",
            flush=True,
        )

    every = list(range(len(FEATURES)))
    print(f"\nleave-one-fold-out text->image R@1 (pool {len(train_names) // FOLDS} photos; ties count against):")
    per_fold, base, fused = leave_one_fold_out(folds, every)
    print(
        "  "
        + "  ".join(f"f{f} {b:.1f}->{u:.1f} ({u - b:+.1f})" for f, (b, u) in enumerate(per_fold))
        + f"  | pooled {base:.2f} -> {fused:.2f} ({fused - base:+.2f})"
    )

    if not args.no_ablation:
        print("ablation, pooled LOFO R@1 change with one feature dropped:")
        for j, name in enumerate(FEATURES):
            if j == 0:
                continue  # cosine is the first stage itself (and fit_fusion_weights starts from its weight)
            _, base_j, fused_j = leave_one_fold_out(folds, [c for c in every if c != j])
            print(f"  -{name:13s} {fused_j - base_j:+.2f}  (all: {fused - base:+.2f})")

    if args.compare:  # e.g. the weights shipped for an earlier head, on these same folds
        old = FusionModel.load(Path(args.compare)).weights
        pooled = np.concatenate([correct(fold.features, fold.labels, old) for fold in folds])
        print(
            f"weights of {args.compare} on these folds: pooled R@1 {base:.2f} -> {100 * pooled.mean():.2f} "
            f"({100 * pooled.mean() - base:+.2f})",
            flush=True,
        )
    weights = fit_fusion_weights([fold.features for fold in folds], [fold.labels for fold in folds])
    print("weights (all folds): " + "  ".join(f"{n} {w:+.3f}" for n, w in zip(FEATURES, weights)), flush=True)

    t0 = time.time()
    centre = image[:, 0]
    train_photos, train_captions = project(shipped, centre, text)
    linear = train_linear_projection(image, train_captions, owner, seed=args.seed)
    model = FusionModel(weights, train_captions, owner, train_photos, linear)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    loaded = FusionModel.load(out)
    if not (np.allclose(loaded.weights, weights) and np.array_equal(loaded.caption_photo, owner)):
        raise SystemExit(f"{out} does not load back as written")
    print(
        f"final: linear projection on {len(train_names)} photos, "
        f"{len(captions)} captions in the space of {', '.join(map(str, heads))}; {time.time() - t0:.1f}s"
    )
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB)")
    print(f"total {time.time() - t_start:.1f}s")


if __name__ == "__main__":
    main()

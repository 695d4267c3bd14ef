"""Shift-aware validation of the offline head: hold out whole concepts of the flickr8k-1k TRAIN split.

    python -m benchmarks.shift_protocol --data ../shared/datasets/flickr8k-1k \
        --methods zero-shot,today,today-out-0.2,today-out-0.3,today-out-0.4 [--second-stage]

Only the 800 train photos are read (the test split is never touched). For each concept (a group of
words: water scenes, dogs, city streets, snow, mountains), every train photo whose captions mention
the concept at least once is kept out of training; the model is judged on
  held-out  up to POOL of those photos (pool: themselves, their captions), kinds of photo it never saw;
  in-dist   as many photos drawn from the rest, also kept out of training (same pool size, so the two
            figures compare).
Reported: recall@1/5/10 text->image and image->text, macro-averaged over the concepts, for the first
stage and, with --second-stage, for the default pipeline: QB-Norm both ways (text->image bank: 2,000
of the fold's training captions; image->text bank: the pool's other photos, as the engine's index
photos) and the learned fusion for text->image. Fusion weights: --fusion-weights shipped takes the 5
weights of data/offline_fusion.npz (fitted on all train photos: a leak of 5 numbers) with the linear
projection and the two-hop captions from the fold's training photos only; refit fits them on inner
folds of the fold's training photos (slower, no leak).

Methods (names compose): zero-shot (the ConSE prior alone); BASE in today (the HeadConfig defaults),
views (trained on 5 augmentation views), wd0.5 (ten times the weight decay); BASE-xK an ensemble of K
seeds (unit outputs averaged); ...-out-A output-space WiSE-FT with the prior (the product's
HeadConfig.prior_mix = A); ...-w-A weight-space WiSE-FT (the MLP's last layer scaled by 1 - A and the
prior's weight moved toward 1: the raw output mixed before normalising). With the second image
network of xmodal-lite-duo (EfficientNet-Lite2 on the same 224-px pixels; features from the product's
own towers, cached as the fusion trainer caches them): lite2-xK heads on Lite2's features alone;
duo-xK the duo's head (K members on each network's block, HeadConfig.towers = 2), whose second stage
uses data-dir/offline_duo_fusion.npz and the duo's tower features, as the product does. Heads are cached on disk
(xmodal cache dir / shift-heads) by config, photos and seed. One thread by default: with the machine
shared, more threads mostly spin.

Tower features come from the PyTorch towers (the default) or, with --onnx DIR, from the exported ONNX
files in DIR (data/xmodal-lite: the shipped ones, text tower in float16; `python -m
training.export_offline_onnx --text-weights float32 --out DIR` makes the float32 reference): the
image graph's `features` output on the same five views, and the text graph's vectors, which are the
text tower's normalised features because the shipped head has no text MLP. The heads are then
trained on those features, so the figures show what the stored weights' precision moves.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.fusion import fit_fusion_weights, train_linear_projection
from training.offline_fusion import cache_file, compute_features
from training.offline_head import read_dataset
from xmodal.indexer.cache import cache_dir
from xmodal.indexer.models.head import HeadConfig, ProjectionHead, train_head
from xmodal.indexer.models.offline_towers import build_offline_towers
from xmodal.indexer.models.spec import OFFLINE_DUO, capabilities
from xmodal.search.rerank.fusion import (
    FEATURES,
    TOP,
    FusionModel,
    LinearProjection,
    features_from_parts,
    photo_parts,
)
from xmodal.search.rerank.qbnorm import QB_NORM_BETA, querybank_correction
from xmodal.search.training.head import cached

CONCEPTS = {
    "water": r"\b(water|beach|ocean|lake|river|pool|swim\w*|surf\w*|waves?|sea|splash\w*|boats?|wet)\b",
    "dogs": r"\b(dogs?|pupp(y|ies))\b",
    "street": r"\b(street|city|sidewalk|buildings?|road|crowd\w*|urban|traffic|store)\b",
    "snow": r"\b(snow\w*|ski\w*|skier|icy|ice)\b",
    "mountain": r"\b(mountain\w*|rocks?|rocky|climb\w*|cliff|hills?|hiker|hiking)\b",
}
POOL = 100
KS = (1, 5, 10)
INNER_FOLDS = 4
BANK = 2000
PRIOR = 384


@dataclass
class ConceptFold:
    name: str
    train: np.ndarray
    indist: np.ndarray
    heldout: np.ndarray


def concept_folds(captions_of: list[list[str]], seed: int = 0) -> list[ConceptFold]:
    folds = []
    for f, (name, pattern) in enumerate(CONCEPTS.items()):
        rx = re.compile(pattern, re.I)
        mentions = np.array([sum(bool(rx.search(c)) for c in caps) for caps in captions_of])
        rng = np.random.default_rng([seed, f])
        rest = np.flatnonzero(mentions == 0)
        held = np.flatnonzero(mentions >= 1)
        held = np.sort(rng.choice(held, min(POOL, len(held)), replace=False))
        indist = np.sort(rng.choice(rest, len(held), replace=False))
        train = np.setdiff1d(rest, indist)
        folds.append(ConceptFold(name, train, indist, held))
    return folds


def _onnx_cache_file(kind: str, data: str, *files: Path) -> Path:
    """Where one side's features computed by exported graphs are cached: keyed by those files' bytes."""
    from training.offline_fusion import CACHE_VERSION

    digest = hashlib.sha256(f"{CACHE_VERSION}|{kind}|{Path(data).resolve()}".encode())
    for file in files:
        digest.update(file.read_bytes())
    return cache_dir() / "features" / f"shift-onnx-{kind}-{digest.hexdigest()[:24]}.pt"


def onnx_features(
    folder: Path, data: str, names: list[str], captions: list[str], threads: int, text_only: bool = False
) -> dict:
    """compute_features' tower features, computed by the exported graphs in `folder` with onnxruntime;
    each side cached by its graph's bytes (a float32 and a float16 text graph share the image side).
    text_only: the photos' features from the PyTorch towers (their cache, as without --onnx)."""
    import json

    from xmodal.data import data_path

    if ProjectionHead.load(str(data_path("offline_head.pt"))).text_mlp is not None:
        raise SystemExit("the shipped head has a text MLP: the text graph's vectors are not the tower's features")
    image = json.loads((folder / "image.json").read_text(encoding="utf-8"))
    text = json.loads((folder / "text.json").read_text(encoding="utf-8"))
    if text_only:
        photos = cached(cache_file(data), lambda: compute_features(build_offline_towers(), data, names, captions))[
            "image"
        ]
    else:
        photos = cached(
            _onnx_cache_file("image", data, folder / image["onnx"]),
            lambda: _onnx_image_features(folder / image["onnx"], image["input"], data, names, threads),
        )["image"]
    return {
        "image": photos,
        "text": cached(
            _onnx_cache_file("text", data, folder / text["onnx"], folder / text["tokenizer"]["file"]),
            lambda: _onnx_text_features(folder, captions, threads),
        )["text"],
    }


def _onnx_image_features(graph: Path, input_name: str, data: str, names: list[str], threads: int) -> dict:
    import onnxruntime
    from PIL import Image
    from torchvision import transforms as T

    from training.offline_fusion import VIEWS, view_pixels
    from xmodal.indexer.models.preprocess import OFFLINE_PREPROCESSING

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    normalise = T.Normalize(OFFLINE_PREPROCESSING.mean, OFFLINE_PREPROCESSING.std)
    t0 = time.time()
    chunks = []
    for b in range(0, len(names), 16):
        pixels = torch.cat([view_pixels(Image.open(Path(data) / "images" / n), normalise) for n in names[b : b + 16]])
        features = session.run(["features"], {input_name: pixels.numpy()})[0]
        chunks.append(torch.from_numpy(features).float().reshape(-1, len(VIEWS), features.shape[-1]))
    print(f"  onnx {graph}: {len(names)} photos in {time.time() - t0:.1f}s", flush=True)
    return {"image": torch.cat(chunks)}


def _onnx_text_features(folder: Path, captions: list[str], threads: int) -> dict:
    from xmodal.indexer.models.query_encoders import QueryTextEncoder

    t0 = time.time()
    encoder = QueryTextEncoder(folder / "text.json", threads=threads)
    text = np.concatenate([encoder.embed_texts(captions[s : s + 64]) for s in range(0, len(captions), 64)])
    print(f"  onnx {folder}/text.json: {len(captions)} captions in {time.time() - t0:.1f}s", flush=True)
    return {"text": torch.from_numpy(text).float()}


# -- methods: each trains on (image views, caption vectors, caption owner) and gives an Embedder ------
@dataclass
class Embedder:
    images: Callable[[torch.Tensor], np.ndarray]  # (n, D) tower features -> (n, 384) unit vectors
    texts: Callable[[torch.Tensor], np.ndarray]


def unit(x: torch.Tensor | np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def head_embedder(head: ProjectionHead) -> Embedder:
    def images(f: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return unit(head.project_images(f))

    def texts(t: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return unit(head.project_texts(t))

    return Embedder(images, texts)


def raw_mix(raws: list[Callable[[torch.Tensor], torch.Tensor]], alpha: float, space: str) -> Embedder:
    """Average of heads (raw outputs) then WiSE-FT with the prior in output or weight space."""

    def images(f: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            f = f.float()
            prior = F.normalize(f[:, -PRIOR:], dim=-1)
            if space == "out":
                x = torch.stack([F.normalize(r(f), dim=-1) for r in raws]).mean(0)
                x = F.normalize(x, dim=-1)
                return unit((1 - alpha) * x + alpha * prior)
            # weight space: the zero-shot head is MLP = 0, prior weight 1; raw = (1-a) raw_ft + a prior
            x = torch.stack([r(f) for r in raws]).mean(0)
            return unit((1 - alpha) * x + alpha * prior)

    return Embedder(images, lambda t: unit(F.normalize(t.float(), dim=-1)))


def make_method(name: str) -> tuple[str, Callable[..., Embedder]]:
    """name -> (trainer key, builder(heads) -> Embedder). Post-hoc variants share the trained heads."""
    if name == "zero-shot":
        return "none", lambda heads: Embedder(lambda f: unit(f[:, -PRIOR:]), lambda t: unit(t))
    m = re.fullmatch(r"(\w[\w.]*?)(?:-x(\d+))?(?:-(out|w)-([\d.]+))?", name)
    if not m:
        raise SystemExit(f"unknown method {name}")
    base, k, space, alpha = m.group(1), int(m.group(2) or 1), m.group(3), float(m.group(4) or 0)
    key = f"{base}-x{k}"
    if base == "duo":  # the product's head: ProjectionHead.ensemble cannot join two-tower heads
        return key, lambda heads: duo_mix(heads, alpha)
    if space is None and k == 1:
        return key, lambda heads: head_embedder(heads[0])
    return key, lambda heads: raw_mix([h._image_raw for h in heads], alpha, space or "out")


BASES: dict[str, dict] = {
    "today": {},
    "views": {},  # today's config trained on the 5 augmentation views
    "wd0.5": {"weight_decay": 0.5},  # ten times the weight decay: a stronger pull of the MLP to zero (= the prior)
    "lite2": {},  # today's config on EfficientNet-Lite2's block of the duo's features
    "duo": {"towers": 2},  # xmodal-lite-duo's head: members on each network's block
}
DUO = capabilities(OFFLINE_DUO).backbones  # xmodal-lite-duo's image networks
LITE0_WIDTH = 1280 + PRIOR  # the duo's features: Lite0's block, then Lite2's


def duo_mix(heads: list[ProjectionHead], alpha: float) -> Embedder:
    """Two-tower heads of one member each (seeds s, s + 1, ...): every unit output averaged, then the
    averaged priors mixed in; the same vectors as one head of members = len(heads) (train_head's seeds)."""

    def images(f: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            f = f.float()
            units = [F.normalize(r, dim=-1) for h in heads for r in h._image_raws(f)]
            x = F.normalize(torch.stack(units).mean(0), dim=-1)
            return unit((1 - alpha) * x + alpha * heads[0]._prior(f))

    return Embedder(images, lambda t: unit(F.normalize(t.float(), dim=-1)))


HEAD_CACHE: Path | None = None  # heads are cached by (config, photos, seed): reruns and other methods reuse them


def train_heads(
    key: str, views: torch.Tensor, text: torch.Tensor, owner: np.ndarray, seed: int
) -> list[ProjectionHead]:
    if key == "none":
        return []
    base, k = key.rsplit("-x", 1)
    cfg = HeadConfig(**BASES[base])
    feats = views if base == "views" else views[:, 0]
    heads = []
    for s in range(int(k)):
        digest = hashlib.sha256(f"{base}|{cfg}|{seed + s}|{len(feats)}".encode())
        digest.update(feats.numpy().tobytes())  # all of it: a new prior changes only the last columns
        path = HEAD_CACHE / f"head-{digest.hexdigest()[:24]}.pt" if HEAD_CACHE else None
        if path is not None and path.is_file():
            heads.append(ProjectionHead.load(str(path)))
            continue
        head = train_head(feats, text, torch.from_numpy(owner), cfg, seed=seed + s)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            head.save(str(path))
            head = ProjectionHead.load(str(path))  # the same stored (int8) weights whether cached or not
        heads.append(head)
    return heads


def cached_linear(views: torch.Tensor, texts: np.ndarray, owner: np.ndarray, seed: int) -> LinearProjection:
    """train_linear_projection, cached on disk beside the heads (keyed by its inputs and seed)."""
    digest = hashlib.sha256(f"linear|{seed}|{views.shape}".encode())
    for part in (views.numpy(), np.ascontiguousarray(texts, dtype=np.float64), owner.astype(np.int64)):
        digest.update(part.tobytes())
    path = HEAD_CACHE / f"linear-{digest.hexdigest()[:24]}.npz" if HEAD_CACHE else None
    if path is not None and path.is_file():
        with np.load(path) as f:
            return LinearProjection(f["mean"], f["scale"], f["weight"], f["bias"])
    linear = train_linear_projection(views, texts, owner, seed=seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, mean=linear.mean, scale=linear.scale, weight=linear.weight, bias=linear.bias)
    return linear


# -- evaluation ----------------------------------------------------------------------------------
def recall(
    scores_t2i: np.ndarray, own_img: np.ndarray, scores_i2t: np.ndarray | None = None, order_t2i=None, order_i2t=None
) -> dict[str, float]:
    out = {}
    o = order_t2i if order_t2i is not None else np.argsort(-scores_t2i, axis=1, kind="stable")
    rank = np.argmax(o == own_img[:, None], axis=1)
    for k in KS:
        out[f"t2i@{k}"] = 100 * float((rank < k).mean())
    o = order_i2t if order_i2t is not None else np.argsort(-scores_i2t, axis=1, kind="stable")
    n_img = o.shape[0]
    first = np.argmax(own_img[o] == np.arange(n_img)[:, None], axis=1)
    for k in KS:
        out[f"i2t@{k}"] = 100 * float((first < k).mean())
    return out


def pipeline_orders(
    img: np.ndarray, txt: np.ndarray, t2i_bank: np.ndarray, fusion: FusionModel | None, tower: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The engine's default second stage on a whole pool: QB-Norm both ways, then the fusion (text->image)."""
    cos = txt @ img.T  # (q, n)
    corr = querybank_correction(t2i_bank @ img.T, QB_NORM_BETA["image"])
    qb = cos - corr[None, :]
    order_t2i = np.argsort(-qb, axis=1, kind="stable")
    if fusion is not None:
        hub = -corr
        parts = photo_parts(fusion, tower)  # query-independent, once per pool (as the engine per photo)
        for q in range(len(txt)):
            top = np.argsort(-cos[q], kind="stable")[:TOP]
            raw = features_from_parts(fusion, txt[q], img[top], parts[top], hub[top])
            fused = top[np.argsort(-fusion.scores(raw), kind="stable")]
            rest = order_t2i[q][~np.isin(order_t2i[q], top)]
            order_t2i[q] = np.concatenate([fused, rest])
    cos_i = img @ txt.T  # (n, m)
    order_i2t = np.zeros_like(cos_i, dtype=np.int64)
    bank_scores = img @ txt.T
    for i in range(len(img)):
        others = np.delete(bank_scores, i, axis=0)  # the index's other photos are the bank
        s = cos_i[i] - querybank_correction(others, QB_NORM_BETA["text"])
        order_i2t[i] = np.argsort(-s, kind="stable")
    return order_t2i, order_i2t


def fusion_for(
    build: Callable[..., Embedder], key: str, views: torch.Tensor, text: torch.Tensor, owner: np.ndarray, seed: int
) -> FusionModel:
    """Fusion weights fitted out of fold on these photos only (inner folds), linear projection on all of them."""
    n = len(views)
    perm = np.random.default_rng(seed).permutation(n)
    feats, labels = [], []
    for f in range(INNER_FOLDS):
        ev = np.sort(perm[f::INNER_FOLDS])
        tr = np.sort(np.setdiff1d(perm, ev))
        model, emb = fold_fusion_model(build, key, views, text, owner, tr, seed)
        ev_caps = np.flatnonzero(np.isin(owner, ev))
        pos = {int(p): j for j, p in enumerate(ev)}
        own = np.array([pos[int(owner[k])] for k in ev_caps])
        photos, queries = emb.images(views[ev, 0]), emb.texts(text[ev_caps])
        rng = np.random.default_rng([seed, f])
        bank = model.train_captions[
            np.sort(rng.choice(len(model.train_captions), min(BANK, len(model.train_captions)), replace=False))
        ]
        hub = -querybank_correction(bank @ photos.T, QB_NORM_BETA["image"])
        tower = views[ev, 0].numpy()
        scores = queries @ photos.T
        parts = photo_parts(model, tower)
        fe = np.zeros((len(ev_caps), TOP, len(FEATURES)))
        lab = np.full(len(ev_caps), -1)
        for q in range(len(ev_caps)):
            top = np.argsort(-scores[q], kind="stable")[:TOP]
            hit = np.flatnonzero(top == own[q])
            lab[q] = hit[0] if len(hit) else -1
            fe[q] = features_from_parts(model, queries[q], photos[top], parts[top], hub[top])
        feats.append(fe)
        labels.append(lab)
    weights = fit_fusion_weights(feats, labels)
    model, _ = fold_fusion_model(build, key, views, text, owner, np.arange(n), seed)
    return FusionModel(weights, model.train_captions, model.caption_photo, model.train_photos, model.linear)


def fold_fusion_model(build, key, views, text, owner, tr, seed):
    caps = np.flatnonzero(np.isin(owner, tr))
    pos = {int(p): j for j, p in enumerate(tr)}
    tr_owner = np.array([pos[int(owner[k])] for k in caps])
    emb = build(train_heads(key, views[tr], text[caps], tr_owner, seed))
    photos, captions = emb.images(views[tr, 0]), emb.texts(text[caps])
    linear = train_linear_projection(views[tr], captions, tr_owner, seed=seed)
    return FusionModel(np.eye(len(FEATURES))[0], captions, tr_owner, photos, linear), emb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/flickr8k-1k")
    ap.add_argument("--methods", default="zero-shot,today,today-out-0.5")
    ap.add_argument("--second-stage", action="store_true")
    ap.add_argument("--data-dir", default="data", help="folder of offline_fusion.npz")
    ap.add_argument("--concepts", default=",".join(CONCEPTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--fusion-weights",
        choices=("shipped", "refit"),
        default="shipped",
        help="shipped: the 5 weights of data/offline_fusion.npz (fitted on all train photos), the linear "
        "projection and two-hop bank from the fold's training photos; refit: weights fitted on inner folds",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gains", action="store_true", help="also print the pipeline's gain over the first stage")
    ap.add_argument(
        "--onnx-text-only",
        action="store_true",
        help="with --onnx: only the text side from the ONNX files, the photos' features from the PyTorch towers "
        "(the float32 and float16 exports share one image graph, within 1e-7 of the PyTorch tower)",
    )
    ap.add_argument(
        "--onnx",
        type=Path,
        default=None,
        help="tower features from the exported ONNX files in this folder (data/xmodal-lite: the shipped ones), "
        "not the PyTorch towers",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global HEAD_CACHE
    HEAD_CACHE = cache_dir() / "shift-heads"
    names, split, all_captions, cap_names = read_dataset(args.data)
    train_names = [n for n in names if split[n] == "train"]
    pos = {n: i for i, n in enumerate(train_names)}
    keep = [k for k, n in enumerate(cap_names) if n in pos]
    captions = [all_captions[k] for k in keep]
    owner = np.array([pos[cap_names[k]] for k in keep])
    if args.onnx is not None:
        feats = onnx_features(args.onnx, args.data, train_names, captions, args.threads, args.onnx_text_only)
    else:
        feats = cached(
            cache_file(args.data), lambda: compute_features(build_offline_towers(), args.data, train_names, captions)
        )
    views, text = feats["image"].float(), feats["text"].float()
    shipped = FusionModel.load(Path(args.data_dir) / "offline_fusion.npz") if args.second_stage else None
    captions_of = [[] for _ in train_names]
    for c, o in zip(captions, owner):
        captions_of[o].append(c)
    folds = [f for f in concept_folds(captions_of, args.seed) if f.name in args.concepts.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    second = [m for m in methods if make_method(m)[0].rsplit("-x", 1)[0] in ("lite2", "duo")]
    if second and args.fusion_weights == "refit":
        raise SystemExit(f"--fusion-weights refit does not cover the second network's methods ({', '.join(second)})")
    # per base: the tower features its heads read (photos, views, dim) and the fusion weights it ships with
    inputs: dict[str, torch.Tensor] = {}
    shipped_for: dict[str, FusionModel | None] = {}
    if second:
        duo = cached(
            cache_file(args.data, OFFLINE_DUO),
            lambda: compute_features(build_offline_towers(DUO), args.data, train_names, captions),
        )["image"].float()
        inputs = {"duo": duo, "lite2": duo[..., LITE0_WIDTH:]}
        duo_file = Path(args.data_dir) / "offline_duo_fusion.npz"
        shipped_for["duo"] = FusionModel.load(duo_file) if args.second_stage and duo_file.is_file() else None
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for fold in folds:
        t0 = time.time()
        caps = np.flatnonzero(np.isin(owner, fold.train))
        p = {int(x): j for j, x in enumerate(fold.train)}
        tr_owner = np.array([p[int(owner[k])] for k in caps])
        heads: dict[str, list[ProjectionHead]] = {}  # per base config, one head per seed
        linears: dict[int, LinearProjection] = {}  # per feature width: the text side is MiniLM's for every method
        for m in methods:
            key, build = make_method(m)
            base, k = key.rsplit("-x", 1) if key != "none" else ("none", "0")
            base_views = inputs.get(base, views)
            if key != "none":
                have = heads.setdefault(base, [])
                for s in range(len(have), int(k)):
                    have += train_heads(f"{base}-x1", base_views[fold.train], text[caps], tr_owner, args.seed + s)
            emb = build(heads[base][: int(k)] if key != "none" else [])
            fusion = None
            if args.second_stage:
                weights = shipped_for.get(base, shipped)
                if args.fusion_weights == "refit":
                    fusion = fusion_for(build, key, views[fold.train], text[caps], tr_owner, args.seed)
                elif weights is not None:
                    width = base_views.shape[-1]
                    if width not in linears:
                        linears[width] = cached_linear(base_views[fold.train], unit(text[caps]), tr_owner, args.seed)
                    fusion = FusionModel(
                        weights.weights,
                        emb.texts(text[caps]),
                        tr_owner,
                        emb.images(base_views[fold.train, 0]),
                        linears[width],
                    )
                bank_all = emb.texts(text[caps])
                bank = bank_all[
                    np.sort(
                        np.random.default_rng(args.seed).choice(len(bank_all), min(BANK, len(bank_all)), replace=False)
                    )
                ]
            for part in ("indist", "heldout"):
                photos = getattr(fold, part)
                pc = np.flatnonzero(np.isin(owner, photos))
                pp = {int(x): j for j, x in enumerate(photos)}
                own = np.array([pp[int(owner[k])] for k in pc])
                img, txt = emb.images(base_views[photos, 0]), emb.texts(text[pc])
                r = recall(txt @ img.T, own, img @ txt.T)
                results.setdefault(m, {}).setdefault(f"{part}/first", []).append(r)
                if args.second_stage:
                    o1, o2 = pipeline_orders(img, txt, bank, fusion, base_views[photos, 0].numpy())
                    results[m].setdefault(f"{part}/pipeline", []).append(recall(None, own, None, o1, o2))
        print(
            f"# fold {fold.name}: train {len(fold.train)}, pools {len(fold.indist)} ({time.time() - t0:.0f}s)",
            flush=True,
        )
        for m in methods:
            for k, v in results[m].items():
                print(f"  {m:22s} {k:17s} " + " ".join(f"{c} {x:5.1f}" for c, x in v[-1].items()), flush=True)
    print(
        f"\nmacro average over {len(folds)} concepts ({', '.join(f.name for f in folds)}); pool = up to {POOL} photos"
    )
    cols = [f"{d}@{k}" for d in ("t2i", "i2t") for k in KS]
    print(f"{'method':22s} {'stage':9s} {'part':8s} " + " ".join(f"{c:>7s}" for c in cols))
    for m in methods:
        for key in sorted(results[m], key=lambda s: (s.split("/")[1], s)):
            part, stage = key.split("/")
            avg = {c: np.mean([r[c] for r in results[m][key]]) for c in cols}
            print(f"{m:22s} {stage:9s} {part:8s} " + " ".join(f"{avg[c]:7.1f}" for c in cols))
        if args.gains and args.second_stage:
            for part in ("indist", "heldout"):
                first, pipe = results[m][f"{part}/first"], results[m][f"{part}/pipeline"]
                gain = {c: np.mean([b[c] - a[c] for a, b in zip(first, pipe)]) for c in cols}
                print(f"{m:22s} {'gain':9s} {part:8s} " + " ".join(f"{gain[c]:+7.1f}" for c in cols))


if __name__ == "__main__":
    main()

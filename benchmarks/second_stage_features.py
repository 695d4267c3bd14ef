"""Candidate features for the learned second stage, judged on the shift protocol's concept folds.

    python -m benchmarks.second_stage_features --data ../shared/datasets/flickr8k-1k

Only the TRAIN split is read. Per concept fold of benchmarks/shift_protocol.py (5 concepts, the
shipped recipe: 3 heads, prior mix 0.3; heads and linear projections cached as the protocol caches
them), each pool's caption queries get their top TOP photos by cosine with the fusion's five
features and candidates the first stage still ignores:
  mlp       the query against the mean of the head's MLP members, before the prior mix
  mstd/mmin the members' disagreement: spread and minimum of the per-member cosines
  X*gap     per-query interactions: a feature (standardised over the candidates) times the query's
            top-1 minus top-2 cosine (0), top-1 minus top-TOP cosine (1), or its similarity to the
            caption bank (2, how typical the query is)
Weights are fitted leave-one-concept-out (on the other four concepts' pools, both parts) with the
product's listwise fit (training.fusion.fit_fusion_weights), or with a small MLP scorer (--mlp).
Printed: text→image R@1 change over the first stage, macro over the concepts, in-dist and held-out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import shift_protocol as sp
from training.fusion import fit_fusion_weights
from training.offline_fusion import cache_file
from training.offline_head import read_dataset
from xmodal.indexer.cache import cache_dir
from xmodal.search.rerank.fusion import TOP, FusionModel, features_from_parts, photo_parts, standardise
from xmodal.search.rerank.qbnorm import QB_NORM_BETA, querybank_correction
from xmodal.search.training.head import cached

METHOD = "today-x3-out-0.3"  # the shipped xmodal-lite recipe
BASE = ["cos", "hub", "two_hop", "conse", "lin"]
SETS = {
    "shipped five, LOCO weights": BASE,
    "cos + hub + linear_cosine": ["cos", "hub", "lin"],
    "five - two_hop": ["cos", "hub", "conse", "lin"],
    "five - conse": ["cos", "hub", "two_hop", "lin"],
    "+ mlp": [*BASE, "mlp"],
    "+ mlp, mstd, mmin": [*BASE, "mlp", "mstd", "mmin"],
    "+ cos, lin x top-1 gap": [*BASE, "cos*0", "lin*0"],
    "+ cos, lin, two_hop x spread": [*BASE, "cos*1", "lin*1", "two_hop*1"],
    "+ cos, two_hop, lin x typicality": [*BASE, "cos*2", "two_hop*2", "lin*2"],
    "all of the above": [*BASE, "mlp", "mstd", "mmin", "cos*0", "lin*0", "cos*1", "lin*1", "cos*2", "lin*2"],
}


def fold_features(data: str, seed: int = 0) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    sp.HEAD_CACHE = cache_dir() / "shift-heads"
    names, split, all_captions, cap_names = read_dataset(data)
    train_names = [n for n in names if split[n] == "train"]
    pos = {n: i for i, n in enumerate(train_names)}
    keep = [k for k, n in enumerate(cap_names) if n in pos]
    owner = np.array([pos[cap_names[k]] for k in keep])
    captions = [all_captions[k] for k in keep]

    def missing() -> dict[str, torch.Tensor]:
        raise SystemExit("no cached tower features: run python -m training.offline_fusion first")

    feats = cached(cache_file(data), missing)
    views, text = feats["image"].float(), feats["text"].float()
    captions_of: list[list[str]] = [[] for _ in train_names]
    for c, o in zip(captions, owner):
        captions_of[o].append(c)
    key, build = sp.make_method(METHOD)
    base, k = key.rsplit("-x", 1)
    out = {}
    for fold in sp.concept_folds(captions_of, seed):
        t0 = time.time()
        caps = np.flatnonzero(np.isin(owner, fold.train))
        p = {int(x): j for j, x in enumerate(fold.train)}
        tr_owner = np.array([p[int(owner[c])] for c in caps])
        heads = []
        for s in range(int(k)):
            heads += sp.train_heads(f"{base}-x1", views[fold.train], text[caps], tr_owner, seed + s)
        emb = build(heads)
        linear = sp.cached_linear(views[fold.train], sp.unit(text[caps]), tr_owner, seed)
        train_caps = emb.texts(text[caps])
        model = FusionModel(np.eye(5)[0], train_caps, tr_owner, emb.images(views[fold.train, 0]), linear)
        pick = np.random.default_rng(seed).choice(len(train_caps), min(sp.BANK, len(train_caps)), replace=False)
        bank = train_caps[np.sort(pick)]
        for part in ("indist", "heldout"):
            photos = getattr(fold, part)
            pc = np.flatnonzero(np.isin(owner, photos))
            pp = {int(x): j for j, x in enumerate(photos)}
            own = np.array([pp[int(owner[c])] for c in pc])
            f0 = views[photos, 0]
            img, txt = emb.images(f0), emb.texts(text[pc])
            with torch.no_grad():
                members = np.stack([sp.unit(r) for h in heads for r in h._image_raws(f0.float())])
            cos = txt @ img.T
            corr = querybank_correction(bank @ img.T, QB_NORM_BETA["image"])
            parts = photo_parts(model, f0.numpy())
            mlp = sp.unit(members.mean(0))
            q_all = len(pc)
            fb, fe, qf = np.zeros((q_all, TOP, 5)), np.zeros((q_all, TOP, 3)), np.zeros((q_all, 3))
            labels, first, qb = np.full(q_all, -1), np.zeros(q_all, int), np.zeros(q_all, int)
            for q in range(q_all):
                order = np.argsort(-cos[q], kind="stable")
                top = order[:TOP]
                first[q] = int(np.flatnonzero(order == own[q])[0])
                qb[q] = int(np.flatnonzero(np.argsort(-(cos[q] - corr), kind="stable") == own[q])[0])
                hit = np.flatnonzero(top == own[q])
                labels[q] = hit[0] if len(hit) else -1
                fb[q] = features_from_parts(model, txt[q], img[top], parts[top], -corr[top])
                mc = members[:, top] @ txt[q]
                fe[q] = np.stack([mlp[top] @ txt[q], mc.std(0), mc.min(0)], 1)
                s = cos[q, order]
                qf[q] = [s[0] - s[1], s[0] - s[TOP - 1], np.sort(bank @ txt[q])[-10:].mean()]
            out[(fold.name, part)] = {
                "base": fb, "extra": fe, "qf": qf, "labels": labels, "first": first, "qb": qb
            }  # fmt: skip
        print(f"# fold {fold.name}: {time.time() - t0:.0f}s", flush=True)
    return out


def columns(v: dict[str, np.ndarray], cols: list[str]) -> np.ndarray:
    b, e = v["base"], v["extra"]
    named = dict(zip(BASE, np.moveaxis(b, -1, 0))) | dict(zip(("mlp", "mstd", "mmin"), np.moveaxis(e, -1, 0)))
    out = []
    for c in cols:
        if "*" in c:
            name, q = c.split("*")
            out.append(standardise(named[name][..., None])[..., 0] * v["qf"][:, int(q)][:, None])
        else:
            out.append(named[c])
    return np.stack(out, -1)


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    own = np.take_along_axis(scores, np.maximum(labels, 0)[:, None], 1)[:, 0]
    return 100 * float(((labels >= 0) & ((scores >= own[:, None]).sum(1) == 1)).mean())


def fit_mlp(xs: list[np.ndarray], labels: list[np.ndarray], hidden: int = 16) -> torch.nn.Module:
    x, y = np.concatenate([standardise(a) for a in xs]), np.concatenate(labels)
    xt, yt = torch.from_numpy(x[y >= 0]).float(), torch.from_numpy(y[y >= 0])
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[-1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(300):
        loss = F.cross_entropy(3 * net(xt)[..., 0], yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def loco(d: dict[tuple[str, str], dict[str, np.ndarray]], cols: list[str], mlp: bool = False) -> dict[str, float]:
    concepts = sorted({c for c, _ in d})
    res: dict[str, list[float]] = {"indist": [], "heldout": []}
    for c in concepts:
        train = [key for key in d if key[0] != c]
        xs, ys = [columns(d[key], cols) for key in train], [d[key]["labels"] for key in train]
        if mlp:
            net = fit_mlp(xs, ys)
        else:
            w = fit_fusion_weights(xs, ys)
        for part in res:
            v = d[(c, part)]
            z = standardise(columns(v, cols))
            if mlp:
                with torch.no_grad():
                    s = net(torch.from_numpy(z).float())[..., 0].numpy()
            else:
                s = z @ w
            res[part].append(top1(s, v["labels"]) - 100 * float((v["first"] == 0).mean()))
    return {p: float(np.mean(r)) for p, r in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/flickr8k-1k")
    ap.add_argument("--fusion", default="data/offline_fusion.npz", help="the shipped weights, also scored")
    ap.add_argument("--mlp", action="store_true", help="also a small MLP scorer on the five and on all")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = fold_features(args.data)
    concepts = sorted({c for c, _ in d})
    for part in ("indist", "heldout"):
        first = np.mean([100 * (d[(c, part)]["first"] == 0).mean() for c in concepts])
        qb = np.mean([100 * (d[(c, part)]["qb"] == 0).mean() for c in concepts]) - first
        print(f"{part}: first stage R@1 {first:.2f}; QB-Norm alone {qb:+.2f}")
    shipped = FusionModel.load(Path(args.fusion)).weights
    gain = {
        p: np.mean([top1(standardise(columns(d[(c, p)], BASE)) @ shipped, d[(c, p)]["labels"]) for c in concepts])
        - np.mean([100 * (d[(c, p)]["first"] == 0).mean() for c in concepts])
        for p in ("indist", "heldout")
    }
    print(f"{'shipped weights':34s} in-dist {gain['indist']:+.2f}  held-out {gain['heldout']:+.2f}")
    for name, cols in SETS.items():
        r = loco(d, cols)
        print(f"{name:34s} in-dist {r['indist']:+.2f}  held-out {r['heldout']:+.2f}", flush=True)
    if args.mlp:
        for name in ("shipped five, LOCO weights", "all of the above"):
            r = loco(d, SETS[name], mlp=True)
            print(f"MLP: {name:29s} in-dist {r['indist']:+.2f}  held-out {r['heldout']:+.2f}", flush=True)


if __name__ == "__main__":
    main()

"""Train the shipped offline projection head (data/offline_head.pt) and report test recall.

    python -m xmodal.search.training.offline_head --data ../shared/datasets/flickr8k-1k --out data/offline_head.pt

Trains on ALL train photos of the flickr8k-1k split with the validated HeadConfig defaults,
then reports recall@1/5/10 (text->image and image->text) on the test split, with the 200
test photos and their 1,000 captions as the pool.  ``--validate`` instead reproduces the
model-selection protocol: train on 650 train photos, report on 150 held-out train photos
(test is not touched).  Deterministic (fixed seed, deterministic torch ops, 1 thread by default).
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time

import torch


from xmodal.indexer.models.offline_towers import build_offline_towers  # noqa: E402
from xmodal.indexer.models.head import HeadConfig, ProjectionHead, train_head  # noqa: E402


def read_dataset(data: str) -> tuple[list[str], dict[str, str], list[str], list[str]]:
    """-> sorted image names, split per image, captions, caption's image name."""
    with open(os.path.join(data, "split.csv"), newline="") as f:
        split = {r["image"]: r["split"] for r in csv.DictReader(f)}
    with open(os.path.join(data, "captions.txt"), newline="") as f:
        rows = list(csv.DictReader(f))
    return sorted(split), split, [r["caption"] for r in rows], [r["image"] for r in rows]


def subset(img_ids: list[int], cap_img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions of the given images, and each caption's position in img_ids."""
    pos = {g: j for j, g in enumerate(img_ids)}
    ci = [k for k, g in enumerate(cap_img.tolist()) if g in pos]
    return torch.tensor(ci), torch.tensor([pos[int(cap_img[k])] for k in ci])


def recall(img: torch.Tensor, txt: torch.Tensor, owner: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    s = txt @ img.T  # (n_cap, n_img)
    rank = (s > s.gather(1, owner[:, None])).sum(1)  # t2i: rank of the caption's own photo
    out = {f"t2i@{k}": 100.0 * (rank < k).float().mean().item() for k in ks}
    order = s.T.argsort(1, descending=True)  # i2t: first own caption in the ranking
    first = (owner[order] == torch.arange(len(img))[:, None]).float().argmax(1)
    out.update({f"i2t@{k}": 100.0 * (first < k).float().mean().item() for k in ks})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/flickr8k-1k")
    ap.add_argument("--out", default="data/offline_head.pt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--validate", action="store_true", help="650/150 split of train photos; does not write --out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()

    from PIL import Image

    names, split, captions, cap_names = read_dataset(args.data)
    index = {n: i for i, n in enumerate(names)}
    cap_img = torch.tensor([index[n] for n in cap_names])
    towers = build_offline_towers()
    transform = towers.image_transform()

    t0 = time.time()
    feats = []
    bs = 32
    for b in range(0, len(names), bs):
        with torch.no_grad():
            x = torch.stack([transform(Image.open(os.path.join(args.data, "images", n))) for n in names[b : b + bs]])
            feats.append(towers.image_features(x))
    img_feats = torch.cat(feats)
    t_img = time.time() - t0
    t0 = time.time()
    txt_feats = towers.text_features(captions)
    t_txt = time.time() - t0
    print(f"features: {len(names)} images in {t_img:.1f}s ({1000 * t_img / len(names):.1f} ms/image incl. decode, "
          f"{args.threads} thread(s)); {len(captions)} captions in {t_txt:.1f}s", flush=True)

    train = [i for i, n in enumerate(names) if split[n] == "train"]
    test = [i for i, n in enumerate(names) if split[n] == "test"]
    if args.validate:
        rng = random.Random(0)
        shuffled = train[:]
        rng.shuffle(shuffled)
        test, train = sorted(shuffled[:150]), sorted(shuffled[150:])

    cfg = HeadConfig()
    ci, loc = subset(train, cap_img)
    t0 = time.time()
    head = train_head(
        img_feats[train], txt_feats[ci], loc, cfg, seed=args.seed,
        on_epoch=lambda e, loss: print(f"epoch {e + 1:3d}/{cfg.epochs} loss {loss:.4f}", flush=True),
    )
    print(f"trained in {time.time() - t0:.1f}s on {len(train)} photos / {len(ci)} captions", flush=True)
    if not args.validate:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        head.save(args.out)
        head = ProjectionHead.load(args.out)  # evaluate exactly what is shipped (fp16 weights)
        print(f"saved {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")

    ci, loc = subset(test, cap_img)
    with torch.no_grad():
        r = recall(head.project_images(img_feats[test]), head.project_texts(txt_feats[ci]), loc)
    which = "validation (150 held-out train photos)" if args.validate else f"test ({len(test)} photos, {len(ci)} captions)"
    print(f"{which}:")
    print("  text->image  R@1 {t2i@1:.1f}  R@5 {t2i@5:.1f}  R@10 {t2i@10:.1f}".format(**r))
    print("  image->text  R@1 {i2t@1:.1f}  R@5 {i2t@5:.1f}  R@10 {i2t@10:.1f}".format(**r))
    print(f"total {time.time() - t_start:.1f}s")


if __name__ == "__main__":
    main()

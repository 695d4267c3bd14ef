"""Train the shipped offline projection head (xmodal/data/offline_head.pt) on the flickr8k-1k TRAIN split.

    python -m training.offline_head --data ../shared/datasets/flickr8k-1k --out data/offline_head.pt
    python -m training.offline_head --data ../shared/datasets/flickr8k-1k --model xmodal-lite-duo \
        --out data

With several image backbones (xmodal-lite-duo) --out is a folder: the head is saved there as one file
per backbone, under the names the model ships (Lite0's part is the default's own file: the same
features and seeds give the same members).

The head is exactly what `xmodal train --held-out 0` makes from the 800 train photos and their
4,000 captions (one function, search.training.head.train_projection_head, so the shipped head and a
user's head are built alike): the validated HeadConfig on the offline towers' ConSE prior, an
ensemble of ENSEMBLE_MEMBERS image MLPs (seeds seed, seed + 1, ...), with the prior mixed back in at
robust.MIN_PRIOR_MIX (WiSE-FT in output space), the mix chosen on concept-held-out folds of the
train split (benchmarks/shift_protocol.py), not on a random held-out part. The test split is not
read unless --report-test is given.
Deterministic for a given --seed and --threads.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import torch

from xmodal.indexer.pairs import CaptionedImage

__all__ = ["flickr_pairs", "read_dataset", "main"]


def read_dataset(data: str) -> tuple[list[str], dict[str, str], list[str], list[str]]:
    """-> sorted image names, split per image, captions, caption's image name (for offline_fusion)."""
    with open(os.path.join(data, "split.csv"), newline="") as f:
        split = {r["image"]: r["split"] for r in csv.DictReader(f)}
    with open(os.path.join(data, "captions.txt"), newline="") as f:
        rows = list(csv.DictReader(f))
    return sorted(split), split, [r["caption"] for r in rows], [r["image"] for r in rows]


def flickr_pairs(data: Path, split: str) -> list[CaptionedImage]:
    """The photos of one split of the flickr8k-1k folder (sorted by name) with their captions."""
    with open(data / "split.csv", newline="") as f:
        wanted = {r["image"] for r in csv.DictReader(f) if r["split"] == split}
    captions: dict[str, list[str]] = {}
    with open(data / "captions.txt", newline="") as f:
        for row in csv.DictReader(f):
            if row["image"] in wanted:
                captions.setdefault(row["image"], []).append(row["caption"])
    return [CaptionedImage(data / "images" / name, tuple(captions[name])) for name in sorted(captions)]


def main() -> None:
    from xmodal.indexer.models.embedding import EmbeddingModel, load_head
    from xmodal.indexer.models.offline_towers import build_offline_towers
    from xmodal.indexer.models.spec import parse_model_spec
    from xmodal.search.training.head import pair_features, train_projection_head
    from xmodal.search.training.robust import retrieval_recall

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/flickr8k-1k"))
    ap.add_argument("--out", type=Path, default=Path("data/offline_head.pt"))
    ap.add_argument("--model", default="xmodal-lite", help="an offline model: xmodal-lite or xmodal-lite-duo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--report-test", action="store_true", help="also print recall on the test split (pool: its 200 photos)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()

    spec = parse_model_spec(args.model)
    if spec.capabilities.towers != "offline":
        raise SystemExit(f"{args.model} is not an offline model")
    # only the frozen towers are used (the heads this makes need not exist yet)
    model = EmbeddingModel(spec, build_offline_towers(spec.capabilities.backbones), None)
    parts = model.spec.capabilities.shipped_head
    out = args.out / "head.pt" if len(parts) > 1 else args.out
    train = flickr_pairs(args.data, "train")
    report = train_projection_head(
        model,
        train,
        out,
        seed=args.seed,
        held_out=0.0,
        on_epoch=lambda e, loss: print(f"epoch {e + 1:3d} loss {loss:.4f}", flush=True),
    )
    print(
        f"saved {report.path} ({report.path.stat().st_size / 1e6:.2f} MB): {report.photos} photos, "
        f"{report.captions} captions, prior mix {report.choice.prior_mix}; {time.time() - t_start:.0f}s"
    )
    if len(parts) > 1:  # one file per backbone, as the model ships them
        for name, part in zip(parts, report.head.tower_heads()):
            part.save(str(args.out / name))
            print(f"saved {args.out / name} ({(args.out / name).stat().st_size / 1e6:.2f} MB)")
        out.unlink()
    if args.report_test:
        head = load_head([args.out / name for name in parts] if len(parts) > 1 else out, "cpu")  # as shipped (int8)
        images, texts, owners = pair_features(model, flickr_pairs(args.data, "test"))
        with torch.no_grad():
            r = retrieval_recall(head.project_images(images), head.project_texts(texts), owners)
        print(
            "test, first stage: text->image R@1 {t2i@1:.1f} R@5 {t2i@5:.1f} R@10 {t2i@10:.1f}; "
            "image->text R@1 {i2t@1:.1f} R@5 {i2t@5:.1f} R@10 {i2t@10:.1f}".format(**r)
        )


if __name__ == "__main__":
    main()

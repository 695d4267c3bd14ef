"""Zero-shot recall of the offline towers' ConSE prior, by the class names it is built from.

    python -m benchmarks.prior_zero_shot --data ../shared/datasets/flickr8k-1k

The prior is an image vector in MiniLM's text space with no training at all: the classifier's top
classes times MiniLM embeddings of the class names (indexer.models.offline_towers). The names
compared: `wordnet`, timm's ImageNet descriptions (synonym lists with Latin names, "great white
shark, white shark, man-eater, man-eating shark, Carcharodon carcharias"), the prior until
2026-11-28; `curated`, CLIP's curated names as open_clip ships them ("great white shark"), the
prior now. Both average the same prompts (CONSE_PROMPTS). Nothing is fitted, so the 800 *train*
photos serve: recall@1/5/10 both ways, macro over pools of 200 photos (their 5 captions each), for
EfficientNet-Lite0, Lite2, and the two priors averaged (what xmodal-lite-duo mixes in).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from training.offline_head import flickr_pairs
from xmodal.indexer.models.offline_towers import CONSE_PROMPTS, build_offline_towers
from xmodal.search.training.robust import retrieval_recall

KS = (1, 5, 10)
PRIOR = 384  # the last columns of each network's feature block


def class_names(kind: str) -> list[str]:
    if kind == "curated":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return list(IMAGENET_CLASSNAMES)
    import timm.data

    info = timm.data.ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/flickr8k-1k"))
    ap.add_argument("--pool", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    pairs = flickr_pairs(args.data, "train")
    towers = build_offline_towers(("lite0", "lite2"))
    transform = towers.preprocessing.transform()
    pixels = torch.stack([transform(Image.open(p.image).convert("RGB")) for p in pairs])
    texts = towers.text_features([c for p in pairs for c in p.captions])
    owner = torch.tensor([i for i, p in enumerate(pairs) for _ in p.captions])
    block = towers.image_dim // 2
    print(f"{len(pairs)} train photos, {len(texts)} captions; pools of {args.pool} photos")
    print(
        f"{'names':8s} {'network':7s} "
        + " ".join(f"t2i@{k:<2d}" for k in KS)
        + " "
        + " ".join(f"i2t@{k:<2d}" for k in KS)
        + "    sum"
    )
    for kind in ("wordnet", "curated"):
        names = class_names(kind)
        emb = torch.stack([towers.text_features([p.format(n) for n in names]) for p in CONSE_PROMPTS])
        towers.class_text_emb = F.normalize(
            emb.mean(0), dim=-1
        )  # the prior's class embeddings, as the towers build them
        feats = torch.cat([towers.image_features(pixels[b : b + 32]) for b in range(0, len(pixels), 32)])
        lite0, lite2 = (F.normalize(feats[:, (t + 1) * block - PRIOR : (t + 1) * block], dim=-1) for t in (0, 1))
        for network, images in (("lite0", lite0), ("lite2", lite2), ("both", F.normalize(lite0 + lite2, dim=-1))):
            pools = []
            for start in range(0, len(pairs), args.pool):
                mine = (owner >= start) & (owner < start + args.pool)
                pools.append(retrieval_recall(images[start : start + args.pool], texts[mine], owner[mine] - start, KS))
            mean = {key: sum(p[key] for p in pools) / len(pools) for key in pools[0]}
            row = [mean[f"t2i@{k}"] for k in KS] + [mean[f"i2t@{k}"] for k in KS]
            print(f"{kind:8s} {network:7s} " + " ".join(f"{x:6.1f}" for x in row) + f" {sum(row):6.1f}", flush=True)
    print(f"{time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()

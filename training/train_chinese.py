"""Make data/chinese_lite.npz, the trained part of the Chinese query path of the offline models.

    python -m training.train_chinese --data ../shared/datasets/flickr8k-1k [--out data/chinese_lite.npz]

Fits on all 800 train photos of flickr8k-1k (their Chinese captions, captions_zh.txt, and English
ones): the caption-language prior from the English captions and the sense each training word's
photos are described with (co-occurrence), then the correction table by
distillation (training.chinese_distillation) toward the shipped xmodal-lite photo vectors
and the English captions' MiniLM vectors. Deterministic for a seed; about two minutes on one core.
Held-out figures: benchmarks/chinese_recall.py (which fits the same way on part of the photos).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.chinese_distillation import (
    StudentConfig,
    fit_prior,
    fit_student,
    read_caption_pairs,
    text_tower_vectors,
)
from xmodal.indexer.models.chinese.student import SENTENCE_SPACE
from xmodal.indexer.models.chinese.translation import Translator
from xmodal.indexer.models.embedding import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/flickr8k-1k"))
    ap.add_argument("--out", type=Path, default=Path("data/chinese_lite.npz"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    pairs = read_caption_pairs(args.data)
    model = load_model("xmodal-lite", device="cpu")
    photos = model.embed_images([Image.open(args.data / "images" / name) for name in pairs.photos])
    english = text_tower_vectors(model, pairs.english)
    teacher = np.stack([english[pairs.english_photo == p].mean(axis=0) for p in range(len(pairs.photos))])
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    prior = fit_prior(pairs.chinese, pairs.chinese_photo, pairs.english, pairs.english_photo)
    translator = Translator(prior)
    translations = [translator.translate(c) for c in pairs.chinese]
    vectors = text_tower_vectors(model, [t.english or t.source for t in translations])
    print(f"{len(pairs.photos)} photos, {len(pairs.chinese)} Chinese captions embedded in {time.time() - t0:.0f}s")
    student = fit_student(
        translations,
        vectors,
        pairs.chinese_photo,
        photos,
        teacher,
        prior,
        SENTENCE_SPACE,
        StudentConfig(),
        seed=args.seed,
        on_epoch=lambda e, loss: print(f"epoch {e + 1:2d} loss {loss:.4f}", flush=True),
    )
    student.save(args.out)
    print(
        f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {len(student.vocabulary)} features, "
        f"{len(prior.english_counts)} English words; {time.time() - t0:.0f}s"
    )


if __name__ == "__main__":
    main()

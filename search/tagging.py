"""Zero-shot tagging: probabilities over a user's labels, with prompt ensembles."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xmodal.indexer.errors import ImageReadError, InvalidQueryError
from xmodal.indexer.images import decode_image
from xmodal.indexer.models.embedding import EmbeddingModel

__all__ = ["PROMPTS", "label_vectors", "tag_images"]

PROMPTS = ("a photo of a {}.", "a picture of {}.", "{}", "a close-up photo of the {}.", "a photo of the {} outdoors.")


def label_vectors(model: EmbeddingModel, labels: Sequence[str], prompts: Sequence[str] = PROMPTS) -> np.ndarray:
    """One unit vector per label: the mean of its prompts' embeddings. A Chinese label enters the
    English prompts as its translation (狗 -> "a photo of a dog."), so it tags as its English twin."""
    from xmodal.indexer.models.chinese import as_english

    clean = [label.strip() for label in labels if label.strip()]
    if not clean:
        raise InvalidQueryError("no labels given")
    texts = [prompt.format(as_english(label)) for label in clean for prompt in prompts]
    vectors = model.embed_texts(texts).reshape(len(clean), len(prompts), -1).mean(axis=1)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def tag_images(
    model: EmbeddingModel, images: Sequence[Path], labels: Sequence[str]
) -> list[tuple[Path, list[tuple[str, float]] | str]]:
    """For each image, labels with probabilities (best first), or the reason it could not be read."""
    clean = [label.strip() for label in labels if label.strip()]
    label_vecs = label_vectors(model, clean)
    scale = model.logit_scale
    out: list[tuple[Path, list[tuple[str, float]] | str]] = []
    for path in images:
        if not os.path.lexists(path):  # never there, rather than "vanished" while read
            out.append((path, "no such file"))
            continue
        try:
            vector = model.embed_images([decode_image(path).image])[0]
        except ImageReadError as e:
            out.append((path, str(e)))
            continue
        logits = scale * (label_vecs @ vector)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs)
        out.append((path, [(clean[i], float(probs[i])) for i in order]))
    return out

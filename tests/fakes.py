"""A deterministic fake encoder: fast tests of indexing and search logic without a real model."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from xmodal.indexer.models.embedding import EmbeddingModel
from xmodal.indexer.models.spec import ModelSpec

FAKE_DIM = 32
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def _colour_vector(rgb: tuple[float, float, float]) -> np.ndarray:
    v = np.zeros(FAKE_DIM, dtype=np.float32)
    v[:3] = np.array(rgb, dtype=np.float32) / 255.0 - 0.4
    return v


class FakeTowers:
    """Images embed by mean colour; texts by the colour words they name, plus a word hash."""

    image_dim = FAKE_DIM
    text_dim = FAKE_DIM

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return _mean_colour

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(pixels.shape[0], FAKE_DIM)
        out[:, :3] = pixels - 0.4
        out[:, 3:] = 0.01
        return out

    def text_features(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            v = np.full(FAKE_DIM, 0.01, dtype=np.float32)
            for word in text.lower().split():
                if word in COLOURS:
                    v += _colour_vector(COLOURS[word])
                else:
                    seed = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
                    v[3 + seed % (FAKE_DIM - 3)] += 0.05
            rows.append(v)
        return torch.from_numpy(np.stack(rows))


def _mean_colour(image: Image.Image) -> torch.Tensor:
    arr = np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.reshape(-1, 3).mean(axis=0))


def fake_model() -> EmbeddingModel:
    return EmbeddingModel(ModelSpec("fake-colour", pretrained="test"), FakeTowers(), head=None)

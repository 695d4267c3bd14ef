"""Learned fusion: re-score a text query's top photos with a linear model over cheap signals.

For the offline default (text→image) only. The first stage's top `TOP` photos are re-scored by
w · z(features), each feature standardised across those candidates (so the weights do not depend
on the pool's size). The features of one (query, photo) pair, all from the query's vector (the
query's text is not needed):
  cosine    the first-stage cosine in the shared space
  hub       QB-Norm's photo term at the engine's β for images, −log Σ_bank exp(β · bank-caption
            cosine)/β: photos close to every caption rank lower
  two_hop   the query's nearest training captions (softmax-weighted), through their photos, to the candidate
  conse     the query against the photo's ConSE vector (ImageNet classes in MiniLM space; the shared
            space is MiniLM's space, see xmodal.indexer.models.head)
  linear_cosine  the query against a second, linear image side: normalise(P · standardised tower
            features), P fitted by InfoNCE to the (fixed) text vectors of the training captions; a
            second opinion on the image side with another inductive bias than the head's MLP
Extra per-candidate features (a hook for signals the first stage's caller has, e.g. a text-in-photo or
a name match): a model fitted with them names them in `extra`, and the caller hands their values per
candidate (search.rerank.pipeline.CandidateFeatures); a feature the caller does not have counts as
the same value for every candidate, which standardises to zero: no effect.
Everything shipped (weights, linear projection, training captions and photos in the shared space) comes
from the flickr8k-1k *train* split; training.offline_fusion makes it. Pure numpy: a search
does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FEATURES",
    "TOP",
    "extra_columns",
    "FusionModel",
    "LinearProjection",
    "features_from_parts",
    "fusion_features",
    "photo_parts",
    "standardise",
]

FEATURES = ("cosine", "hub", "two_hop", "conse", "linear_cosine")
TOP = 20  # candidates re-scored: the model was fitted on each query's top 20
TWO_HOP_CAPTIONS = 20
TWO_HOP_TEMPERATURE = 20.0
CONSE_DIM = 384  # the last columns of the offline towers' image features


@dataclass(frozen=True)
class LinearProjection:
    """A linear image side into the shared space: normalise(weight · standardised tower features + bias)."""

    mean: np.ndarray  # (feature_dim,)
    scale: np.ndarray  # (feature_dim,)
    weight: np.ndarray  # (embed_dim, feature_dim)
    bias: np.ndarray  # (embed_dim,)

    def project(self, features: np.ndarray) -> np.ndarray:
        """(n, embed_dim) unit vectors of (n, feature_dim) tower features."""
        x = (features.astype(np.float64) - self.mean) / self.scale
        y = x @ self.weight.T + self.bias
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-8)


def standardise(x: np.ndarray, axis: int = -2) -> np.ndarray:
    """Each feature to zero mean and unit spread across the candidates."""
    return (x - x.mean(axis=axis, keepdims=True)) / (x.std(axis=axis, keepdims=True) + 1e-6)


def photo_parts(model: FusionModel, tower_features: np.ndarray) -> np.ndarray:
    """(c, CONSE_DIM + d) the query-independent part of each photo's features: its unit ConSE vector
    and its unit vector under the linear projection (a search computes them once per photo)."""
    conse = tower_features[:, -CONSE_DIM:].astype(np.float64)
    conse = conse / np.maximum(np.linalg.norm(conse, axis=1, keepdims=True), 1e-8)
    return np.concatenate([conse, model.linear.project(tower_features)], axis=1)


def fusion_features(
    model: FusionModel,
    query: np.ndarray,
    photos: np.ndarray,
    tower_features: np.ndarray,
    hub: np.ndarray,
) -> np.ndarray:
    """(c, len(FEATURES)) raw features of one query against c candidate photos.

    query: (d,) unit vector; photos: (c, d) unit vectors; tower_features: (c, image_dim) of the
    offline towers; hub: (c,) QB-Norm's term for the candidates (search.rerank.qbnorm: the score change
    querybank_normalise makes; any constant offset, zeros without a bank), computed once by the caller."""
    return features_from_parts(model, query, photos, photo_parts(model, tower_features), hub)


def features_from_parts(
    model: FusionModel,
    query: np.ndarray,
    photos: np.ndarray,
    parts: np.ndarray,
    hub: np.ndarray,
    cosine: np.ndarray | None = None,
) -> np.ndarray:
    """fusion_features from photo_parts; `cosine` is the first stage's exact score when the caller has it."""
    photos = photos.astype(np.float64)
    query = query.astype(np.float64)
    cosine = photos @ query if cosine is None else cosine.astype(np.float64)
    near = np.einsum("ij,j->i", model.train_captions, query)  # single-threaded: see search.rerank.pipeline
    top = np.argpartition(-near, min(TWO_HOP_CAPTIONS, len(near)) - 1)[:TWO_HOP_CAPTIONS]
    weights = np.exp(TWO_HOP_TEMPERATURE * (near[top] - near[top].max()))
    weights /= weights.sum()
    two_hop = (photos @ model.train_photos[model.caption_photo[top]].T) @ weights
    conse = parts[:, :CONSE_DIM] @ query
    linear_cosine = parts[:, CONSE_DIM:] @ query
    return np.stack([cosine, hub.astype(np.float64), two_hop, conse, linear_cosine], axis=1)


def extra_columns(names: tuple[str, ...], values: Mapping[str, np.ndarray] | None, count: int) -> np.ndarray:
    """(count, len(names)) the extra features a model reads, in its order; zeros for those not given."""
    out = np.zeros((count, len(names)))
    for j, name in enumerate(names):
        value = values.get(name) if values is not None else None
        if value is not None:
            column = np.asarray(value, dtype=np.float64).reshape(-1)
            if len(column) != count:
                raise ValueError(f"extra feature '{name}' has {len(column)} values for {count} candidates")
            out[:, j] = column
    return out


@dataclass(frozen=True)
class FusionModel:
    weights: np.ndarray  # (len(FEATURES) + len(extra),) over standardised features
    train_captions: np.ndarray  # (m, d) training captions in the shared space
    caption_photo: np.ndarray  # (m,) row of each caption's photo in train_photos
    train_photos: np.ndarray  # (p, d) training photos in the shared space
    linear: LinearProjection  # the linear_cosine feature's image side
    extra: tuple[str, ...] = ()  # names of the extra per-candidate features the last weights cover

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES) + len(self.extra):
            raise ValueError(f"{len(self.weights)} weights for {len(FEATURES) + len(self.extra)} features")

    def scores(self, features: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
        """(c,) fused scores from fusion_features of the top candidates and, for a model with extra
        features, their (c, len(extra)) values (extra_columns)."""
        if self.extra:
            extra = extra if extra is not None else np.zeros((len(features), len(self.extra)))
            features = np.concatenate([features, extra], axis=1)
        return standardise(features) @ self.weights

    def save(self, path: Path) -> None:
        row_scale = np.maximum(np.abs(self.linear.weight).max(axis=1), 1e-12) / 127.0
        np.savez_compressed(
            path,
            features=np.array(FEATURES),
            extra_features=np.array(self.extra, dtype=str),
            weights=self.weights,
            train_captions=self.train_captions.astype(np.float16),
            caption_photo=self.caption_photo.astype(np.int32),
            train_photos=self.train_photos.astype(np.float16),
            linear_mean=self.linear.mean,
            linear_scale=self.linear.scale,
            # int8 with a scale per output row: a two-backbone model's projection (384 x 3,328)
            # keeps its file under 5 MB so
            linear_weight_int8=np.rint(self.linear.weight / row_scale[:, None]).astype(np.int8),
            linear_weight_scale=row_scale.astype(np.float32),
            linear_bias=self.linear.bias,
        )

    @classmethod
    def load(cls, path: Path) -> FusionModel:
        with np.load(path, allow_pickle=False) as f:
            if tuple(str(n) for n in f["features"]) != FEATURES:
                raise ValueError(f"fusion model '{path}' was made for other features")
            if "linear_weight_int8" in f.files:
                weight = (
                    f["linear_weight_int8"].astype(np.float64) * f["linear_weight_scale"].astype(np.float64)[:, None]
                )
            else:  # written before: float16
                weight = f["linear_weight"].astype(np.float64)
            linear = LinearProjection(
                f["linear_mean"].astype(np.float64),
                f["linear_scale"].astype(np.float64),
                weight,
                f["linear_bias"].astype(np.float64),
            )
            extra = tuple(str(n) for n in f["extra_features"]) if "extra_features" in f.files else ()
            return cls(
                f["weights"].astype(np.float64),
                f["train_captions"].astype(np.float64),
                f["caption_photo"].astype(np.int64),
                f["train_photos"].astype(np.float64),
                linear,
                extra,
            )

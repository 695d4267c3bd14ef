"""`xmodal train`: fit a model's projection head on image–caption pairs, towers frozen.

Tower features are computed once per (model, image set) and cached on disk, so epochs take seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from xmodal.indexer.cache import cache_dir as xmodal_cache
from xmodal.indexer.errors import ImageReadError, InvalidInputError
from xmodal.indexer.images import decode_image
from xmodal.indexer.models.embedding import EmbeddingModel
from xmodal.indexer.models.head import HeadConfig, ProjectionHead, train_head
from xmodal.indexer.models.spec import towers_fingerprint
from xmodal.indexer.pairs import CaptionedImage
from xmodal.search.training.robust import HELD_OUT_FRACTION, MixChoice, choose_on_held_out

__all__ = [
    "ENSEMBLE_MEMBERS",
    "PairFeatures",
    "TrainReport",
    "features_cache_file",
    "cached",
    "pixel_batches",
    "pair_features",
    "head_config",
    "train_projection_head",
]

PairFeatures = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# Three seeds, unit outputs averaged: about +1 recall on concept-held-out photos and in-distribution
# alike over one head (benchmarks/shift_protocol.py); the image head is a small part of indexing.
ENSEMBLE_MEMBERS = 3
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class TrainReport:
    """What `train_projection_head` wrote and how the prior mix was chosen."""

    path: Path
    photos: int
    captions: int
    choice: MixChoice
    head: ProjectionHead  # as trained (the file holds its int8 weight matrices)


def features_cache_file(
    model: EmbeddingModel, pairs: Sequence[CaptionedImage], kind: str, cache_dir: Path | None = None
) -> Path:
    """Where tower features of these pairs are cached: keyed by the towers (`towers_fingerprint`),
    each photo's path, size and mtime, and the captions."""
    digest = hashlib.sha256(f"{kind}|{towers_fingerprint(model.spec)}".encode())
    for pair in pairs:
        st = pair.image.stat()
        digest.update(f"{pair.image.absolute()}|{st.st_size}|{st.st_mtime_ns}|".encode())
        digest.update("\x1f".join(pair.captions).encode())
    folder = cache_dir or xmodal_cache() / "features"
    return folder / f"{kind}-{digest.hexdigest()[:24]}.pt"


def cached(cache_file: Path, compute: Callable[[], T]) -> T:
    """torch.load(cache_file), or compute() saved there atomically (concurrent runs never see half a file)."""
    if cache_file.is_file():
        return torch.load(cache_file, weights_only=True)
    value = compute()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
    torch.save(value, tmp)
    os.replace(tmp, cache_file)
    return value


def pixel_batches(
    model: EmbeddingModel, pairs: Sequence[CaptionedImage], batch_size: int = 32
) -> Iterator[torch.Tensor]:
    """The pairs' photos, preprocessed for the model, in batches on its device; an unreadable
    photo is an InvalidInputError naming it."""
    transform = model.image_transform
    for start in range(0, len(pairs), batch_size):
        pixels = []
        for pair in pairs[start : start + batch_size]:
            try:
                pixels.append(transform(decode_image(pair.image).image))
            except ImageReadError as e:
                raise InvalidInputError(f"{pair.image}: {e}") from None
        yield torch.stack(pixels).to(model.device)


@torch.inference_mode()
def pair_features(
    model: EmbeddingModel, pairs: Sequence[CaptionedImage], cache_dir: Path | None = None, batch_size: int = 32
) -> PairFeatures:
    """(image_feats (N, Di), text_feats (M, Dt), caption_image (M,)) from the frozen towers."""

    def compute() -> dict[str, torch.Tensor]:
        image_chunks = [
            model.towers.image_features(pixels).float().cpu() for pixels in pixel_batches(model, pairs, batch_size)
        ]
        captions = [caption for pair in pairs for caption in pair.captions]
        owners = torch.tensor([i for i, pair in enumerate(pairs) for _ in pair.captions], dtype=torch.long)
        text_chunks = [
            model.towers.text_features(captions[s : s + 256]).float().cpu() for s in range(0, len(captions), 256)
        ]
        return {"image": torch.cat(image_chunks), "text": torch.cat(text_chunks), "caption_image": owners}

    feats = cached(features_cache_file(model, pairs, "head", cache_dir), compute)
    return feats["image"], feats["text"], feats["caption_image"]


def head_config(model: EmbeddingModel, epochs: int | None = None) -> HeadConfig:
    """The head every trainer builds for this model: `xmodal train` and the shipped head's script alike.

    The prior's width comes from the model's capabilities (the towers object carries no such fact),
    so the offline default's head always builds on its ConSE prior."""
    capabilities = model.spec.capabilities
    config = HeadConfig(
        embed_dim=model.towers.text_dim,
        prior_dim=capabilities.prior_dim,
        members=ENSEMBLE_MEMBERS,
        towers=len(capabilities.backbones) if capabilities.towers == "offline" else 1,
    )
    if epochs is not None:
        config.epochs = epochs
    return config


def train_projection_head(
    model: EmbeddingModel,
    pairs: Sequence[CaptionedImage],
    out: Path,
    epochs: int | None = None,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    held_out: float = HELD_OUT_FRACTION,
) -> TrainReport:
    """Train a head for the model's towers and save it to `out`, robust by default.

    A part of the photos (`held_out`, 0 = none) is kept out of a first fit to choose how much of the
    zero-shot prior is mixed back in (robust.choose_prior_mix); the saved head is then fitted on all
    pairs with that mix. The report carries the held-out figures of the head alone and as saved."""
    image_feats, text_feats, owners = pair_features(model, pairs)
    config = head_config(model, epochs)
    choice = choose_on_held_out(image_feats, text_feats, owners, config, seed=seed, held_out=held_out)
    head = train_head(
        image_feats,
        text_feats,
        owners,
        dataclasses.replace(config, prior_mix=choice.prior_mix),
        seed=seed,
        on_epoch=on_epoch,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head.save(str(out))
    return TrainReport(path=out, photos=len(image_feats), captions=len(text_feats), choice=choice, head=head)

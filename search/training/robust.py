"""Robust fine-tuning of a projection head: how much of the zero-shot prior to mix back in.

A head fitted on a few hundred photos learns those photos well and can forget what the zero-shot
prior (the offline default's ConSE vector) knows about every other kind of photo (Wortsman et al.,
"Robust fine-tuning of zero-shot models", CVPR 2022). The head's `prior_mix` (WiSE-FT in output
space, see xmodal.indexer.models.head) mixes the prior back in. Here it is chosen on photos kept out
of the fit: the largest mix whose held-out recall is within `MIX_TOLERANCE` of the best, never below
`MIN_PRIOR_MIX` — held-out photos come from the same collection as the training photos, so they
cannot show what a narrow collection forgets; the floor keeps the prior for that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch

from xmodal.indexer.models.head import HeadConfig, ProjectionHead, train_head

__all__ = [
    "HELD_OUT_FRACTION",
    "MIN_PRIOR_MIX",
    "MIX_GRID",
    "MixChoice",
    "choose_on_held_out",
    "choose_prior_mix",
    "retrieval_recall",
    "split_held_out",
]

HELD_OUT_FRACTION = 0.2
# The shipped offline head's mix, chosen on concept-held-out folds (benchmarks/shift_protocol.py):
# for the 3-member ensemble, the largest held-out recall among the mixes that keep every
# in-distribution figure at or above the head without the prior's (0.3 since the prior is built
# from curated class names; 0.2 before, with the WordNet names).
MIN_PRIOR_MIX = 0.3
MIX_GRID = tuple(round(0.1 * i, 1) for i in range(11))
MIX_TOLERANCE = 1.0  # points of mean held-out recall: within it, the mix with more prior wins
MIN_HELD_OUT_PHOTOS = 50  # fewer: held-out recall moves by several points from one photo to the next
MIN_TRAIN_PHOTOS = 300  # fewer: the head (a 1024-wide MLP) mostly memorises
KS = (1, 5, 10)


@dataclasses.dataclass(frozen=True)
class MixChoice:
    """The chosen prior mix and the held-out figures behind it (None when nothing was held out)."""

    prior_mix: float
    held_out_photos: int
    head_alone: dict[str, float] | None  # held-out recall of the fitted head, mix 0
    chosen: dict[str, float] | None  # ... with the chosen mix
    prior_alone: dict[str, float] | None  # ... of the zero-shot prior alone (mix 1), when there is a prior
    by_mix: dict[float, float]  # mean held-out recall per mix tried
    warnings: tuple[str, ...] = ()


def retrieval_recall(
    images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor, ks: Sequence[int] = KS
) -> dict[str, float]:
    """Recall@k (%) both ways over one pool: images (n, d) and texts (m, d) unit vectors, owner (m,)
    the image of each text. text→image: the text's own image; image→text: any of its texts."""
    scores = texts @ images.T  # (m, n)
    own = scores.gather(1, owner[:, None])
    rank = (scores > own).sum(1)  # ties count for the query
    out = {f"t2i@{k}": 100.0 * float((rank < k).float().mean()) for k in ks}
    order = scores.T.argsort(dim=1, descending=True, stable=True)  # (n, m)
    first = (owner[order] == torch.arange(len(images))[:, None]).float().argmax(1)
    has_text = torch.bincount(owner, minlength=len(images)) > 0
    out.update({f"i2t@{k}": 100.0 * float((first[has_text] < k).float().mean()) for k in ks})
    return out


def split_held_out(n_photos: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit photos, held-out photos), a seeded random split by photo; nothing held out below 10 photos."""
    held = int(round(n_photos * fraction)) if n_photos >= 10 else 0
    perm = np.random.default_rng(seed).permutation(n_photos)
    return np.sort(perm[held:]), np.sort(perm[:held])


def choose_prior_mix(
    by_mix: dict[float, float], floor: float = MIN_PRIOR_MIX, tolerance: float = MIX_TOLERANCE
) -> float:
    """The largest mix ≥ floor whose score is within tolerance of the best score at or above the floor."""
    allowed = {m: s for m, s in by_mix.items() if m >= floor}
    if not allowed:
        return floor
    best = max(allowed.values())
    return max(m for m, s in allowed.items() if s >= best - tolerance)


def _captions_of(owners: torch.Tensor, photos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the captions of these photos, and each caption's photo position among them."""
    position = torch.full((int(owners.max()) + 1 if len(owners) else 0,), -1, dtype=torch.long)
    position[torch.from_numpy(photos)] = torch.arange(len(photos))
    rows = torch.nonzero(position[owners] >= 0).flatten()
    return rows, position[owners[rows]]


def choose_on_held_out(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    owners: torch.Tensor,
    config: HeadConfig,
    seed: int = 0,
    held_out: float = HELD_OUT_FRACTION,
    on_epoch: Callable[[int, float], None] | None = None,
) -> MixChoice:
    """Fit a head on the photos not held out and choose its prior mix on the held-out ones."""
    owners = owners.long()
    n = len(image_feats)
    has_prior = config.prior_dim > 0
    floor = MIN_PRIOR_MIX if has_prior else 0.0
    if held_out <= 0:
        return MixChoice(floor, 0, None, None, None, {})
    fit, held = split_held_out(n, held_out, seed)
    warnings = []
    if len(fit) < MIN_TRAIN_PHOTOS:
        warnings.append(
            f"only {len(fit)} photos to train on (fewer than {MIN_TRAIN_PHOTOS}): the head mostly memorises them"
        )
    if len(held) < 2:
        warnings.append(f"too few photos to hold any out: prior mix {floor} was not checked")
        return MixChoice(floor, 0, None, None, None, {}, tuple(warnings))
    if len(held) < MIN_HELD_OUT_PHOTOS:
        warnings.append(f"only {len(held)} held-out photos (fewer than {MIN_HELD_OUT_PHOTOS}): its figures are noisy")
    rows, local = _captions_of(owners, fit)
    head = train_head(
        image_feats[fit],
        text_feats[rows],
        local,
        dataclasses.replace(config, prior_mix=0.0),
        seed=seed,
        on_epoch=on_epoch,
    )
    rows, local = _captions_of(owners, held)
    if len(rows) == 0:
        warnings.append("the held-out photos have no captions: prior mix was not checked")
        return MixChoice(floor, len(held), None, None, None, {}, tuple(warnings))
    figures: dict[float, dict[str, float]] = {}
    with torch.no_grad():
        texts = head.project_texts(text_feats[rows])
        for mix in MIX_GRID if has_prior else (0.0,):
            images = ProjectionHead.with_prior_mix(head, mix).project_images(image_feats[held])
            figures[mix] = retrieval_recall(images, texts, local)
    by_mix = {m: float(np.mean(list(f.values()))) for m, f in figures.items()}
    chosen = choose_prior_mix(by_mix, floor)
    return MixChoice(
        prior_mix=chosen,
        held_out_photos=len(held),
        head_alone=figures[0.0],
        chosen=figures[chosen],
        prior_alone=figures.get(1.0),
        by_mix=by_mix,
        warnings=tuple(warnings),
    )

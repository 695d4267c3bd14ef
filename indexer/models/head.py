"""Trainable projection heads of the offline default model.

The frozen towers (``indexer.offline_towers``) give image features and MiniLM sentence
embeddings; this head maps both into one shared, L2-normalised space.  Design choices
(validated on a held-out part of the flickr8k-1k train split, see
``python -m training.offline_head``):

* The shared space IS the MiniLM sentence space (``embed_dim == text_dim``).  The text
  side is the identity by default (optionally plus a zero-initialised residual MLP,
  ``text_hidden > 0``, which gave no validation gain), so the pretrained text space - and
  with it generalisation to words never seen in training - is kept intact.
* The image side is an MLP on standardised pooled CNN features, added to a "prior"
  vector that already lives in text space: the ConSE embedding (classifier
  probabilities x MiniLM embeddings of ImageNet class names) that the towers append as
  the last ``prior_dim`` feature columns.  The prior gives zero-shot semantics, the MLP
  learns what the classifier cannot name (people, actions, scenes).
* Symmetric InfoNCE (CLIP loss) with a learnable temperature.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import zipfile
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class HeadConfig:
    """Hyper-parameters of the head and its training (defaults = validated values)."""

    embed_dim: int = 384  # shared space size; must equal text_dim (identity text path)
    prior_dim: int = 384  # last columns of image features that are a text-space prior (0 = none)
    image_hidden: int = 1024  # hidden width of the image MLP
    # heavy dropout on the image MLP's input and hidden layer: 650-800 photos only (0.3 -> 0.7: +5 t2i R@10 on val)
    image_dropout: float = 0.7
    # residual text MLP width; 0 = identity text path (a residual gave no val gain; identity keeps MiniLM's space)
    text_hidden: int = 0
    text_dropout: float = 0.1
    prior_weight: float = 1.0  # initial weight of the prior (learnable)
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    text_lr_mult: float = 0.3  # text residual learns slower: keep the MiniLM space
    weight_decay: float = 0.05
    init_temperature: float = 0.05
    all_captions: bool = True  # every caption of a batch photo is a positive (vs one random caption)
    warmup_epochs: int = 2
    # WiSE-FT in output space (Wortsman et al. 2022): the image vector is
    # normalise((1 - a) * normalise(head) + a * normalise(prior)). A head fitted on a narrow set of
    # photos forgets what the zero-shot prior knows about other photos; mixing the prior back in
    # keeps it (chosen on concept-held-out folds: benchmarks/shift_protocol.py). 0 = the head alone.
    prior_mix: float = 0.0
    # An ensemble: this many image MLPs, trained alike from seeds seed, seed + 1, ...; the image
    # vector averages their unit outputs before the prior is mixed in. The text path is shared.
    members: int = 1
    # Image towers whose feature blocks [pooled | prior] follow each other in the image features;
    # `members` MLPs read each block. The priors are averaged for the mix. (Heads on two CNNs
    # generalise better than as many seeds on one: benchmarks/shift_protocol.py, duo.)
    towers: int = 1


class ProjectionHead(nn.Module):
    """Maps frozen tower features into the shared, normalised embedding space."""

    feat_mean: torch.Tensor  # buffers, set from the training features
    feat_std: torch.Tensor

    def __init__(self, image_dim: int, text_dim: int, config: HeadConfig | None = None) -> None:
        super().__init__()
        cfg = config or HeadConfig()
        if cfg.embed_dim != text_dim:
            raise ValueError(
                f"embed_dim ({cfg.embed_dim}) must equal text_dim ({text_dim}): the text path is identity+residual"
            )
        if cfg.prior_dim not in (0, cfg.embed_dim):
            raise ValueError("prior_dim must be 0 or embed_dim")
        if not 0.0 <= cfg.prior_mix <= 1.0:
            raise ValueError(f"prior_mix must lie in [0, 1], not {cfg.prior_mix}")
        mlps = cfg.members * cfg.towers
        if cfg.members < 1 or cfg.towers < 1 or (mlps > 1 and cfg.text_hidden > 0):
            raise ValueError("members must be at least 1, and an ensemble has the identity text path (text_hidden 0)")
        if image_dim % cfg.towers:
            raise ValueError(f"image_dim ({image_dim}) is not {cfg.towers} equal tower blocks")
        self.config = cfg
        self.image_dim = image_dim
        self.text_dim = text_dim
        self.embed_dim = cfg.embed_dim
        self.block_dim = image_dim // cfg.towers
        base_dim = self.block_dim - cfg.prior_dim
        # Standardisation statistics of the pooled features (tower after tower), set from training data.
        self.register_buffer("feat_mean", torch.zeros(base_dim * cfg.towers))
        self.register_buffer("feat_std", torch.ones(base_dim * cfg.towers))
        self.image_mlp = _image_mlp(base_dim, cfg)
        self.prior_weight = nn.Parameter(torch.tensor(float(cfg.prior_weight)))
        # An ensemble's other members; a single head has neither (its saved state is as before).
        self.more_mlps = nn.ModuleList(_image_mlp(base_dim, cfg) for _ in range(mlps - 1))
        more = torch.full((mlps - 1,), float(cfg.prior_weight)) if mlps > 1 else None
        self.more_prior_weights = nn.Parameter(more) if more is not None else None
        if cfg.text_hidden > 0:
            last = nn.Linear(cfg.text_hidden, text_dim)
            # Zero-init: training starts from the untouched MiniLM space.
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.text_mlp: nn.Module | None = nn.Sequential(
                nn.Dropout(cfg.text_dropout), nn.Linear(text_dim, cfg.text_hidden), nn.GELU(), last
            )
        else:
            self.text_mlp = None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    def _image_raw(self, feats: torch.Tensor) -> torch.Tensor:
        """The first member's output before normalisation (what training fits)."""
        return self._image_raws(feats)[0]

    def _image_raws(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """Each MLP's output before normalisation: member j reads tower j // members's block."""
        p, members = self.config.prior_dim, self.config.members
        mlps = [self.image_mlp, *self.more_mlps]
        weights = [self.prior_weight, *(self.more_prior_weights if self.more_prior_weights is not None else [])]
        base_dim = self.block_dim - p
        raws = []
        for t in range(self.config.towers):
            block = feats[..., t * self.block_dim : (t + 1) * self.block_dim]
            mean, std = (b[t * base_dim : (t + 1) * base_dim] for b in (self.feat_mean, self.feat_std))
            standard = (block[..., :base_dim] - mean) / std
            prior = F.normalize(block[..., -p:], dim=-1) if p else None
            for mlp, w in zip(mlps[t * members : (t + 1) * members], weights[t * members : (t + 1) * members]):
                raws.append(mlp(standard) + w * prior if prior is not None else mlp(standard))
        return raws

    def _prior(self, feats: torch.Tensor) -> torch.Tensor:
        """The towers' zero-shot priors, each normalised, averaged and normalised."""
        p = self.config.prior_dim
        blocks = [
            feats[..., (t + 1) * self.block_dim - p : (t + 1) * self.block_dim] for t in range(self.config.towers)
        ]
        return F.normalize(torch.stack([F.normalize(b, dim=-1) for b in blocks]).sum(0), dim=-1)

    def project_images(self, feats: torch.Tensor) -> torch.Tensor:
        """(n, image_dim) -> (n, embed_dim) L2-normalised.  (n, views, image_dim) is averaged over views."""
        feats = feats.float()
        raws = self._image_raws(feats)
        if len(raws) == 1:
            x = F.normalize(raws[0], dim=-1)
        else:
            x = F.normalize(torch.stack([F.normalize(r, dim=-1) for r in raws]).mean(0), dim=-1)
        mix, p = self.config.prior_mix, self.config.prior_dim
        if mix and p:
            x = F.normalize((1.0 - mix) * x + mix * self._prior(feats), dim=-1)
        if x.dim() == 3:
            x = F.normalize(x.mean(1), dim=-1)
        return x

    def project_texts(self, feats: torch.Tensor) -> torch.Tensor:
        """(n, text_dim) -> (n, embed_dim) L2-normalised."""
        t = F.normalize(feats.float(), dim=-1)
        if self.text_mlp is not None:
            t = t + self.text_mlp(t)
        return F.normalize(t, dim=-1)

    def with_prior_mix(self, prior_mix: float) -> ProjectionHead:
        """The same trained weights (shared, not copied) with another output-space mix of the prior."""
        if not 0.0 <= prior_mix <= 1.0:
            raise ValueError(f"prior_mix must lie in [0, 1], not {prior_mix}")
        twin = copy.copy(self)
        twin.config = dataclasses.replace(self.config, prior_mix=float(prior_mix))
        return twin

    @classmethod
    def ensemble(cls, heads: Sequence[ProjectionHead]) -> ProjectionHead:
        """One head whose members are these single heads' image MLPs (trained alike on the same
        features, so they share the standardisation and the identity text path)."""
        first = heads[0]
        config = dataclasses.replace(first.config, members=len(heads))
        joined = cls(first.image_dim, first.text_dim, config)
        for head in heads[1:]:
            if head.config.members != 1 or not torch.equal(head.feat_mean, first.feat_mean):
                raise ValueError("an ensemble joins single heads trained on the same features")
        state = {k: v for k, v in first.state_dict().items()}
        state.update(_members_state([h.image_mlp for h in heads], torch.cat([_prior_weights(h) for h in heads])))
        joined.load_state_dict(state)
        return joined.eval()

    @classmethod
    def across_towers(cls, heads: Sequence[ProjectionHead]) -> ProjectionHead:
        """One head over the towers' features side by side: tower t's members are heads[t]'s, each
        trained on its own tower's features alone (same config, one tower each). The temperature
        (logit scale) is the first head's."""
        first = heads[0]
        for head in heads:
            if head.config.towers != 1 or dataclasses.replace(head.config, prior_mix=0.0) != dataclasses.replace(
                first.config, prior_mix=0.0
            ):
                raise ValueError("heads across towers are single-tower heads of one config")
            if head.image_dim != first.image_dim or head.text_mlp is not None:
                raise ValueError("heads across towers read blocks of one size, with the identity text path")
        config = dataclasses.replace(first.config, towers=len(heads))
        joined = cls(first.image_dim * len(heads), first.text_dim, config)
        state = {
            "feat_mean": torch.cat([h.feat_mean for h in heads]),
            "feat_std": torch.cat([h.feat_std for h in heads]),
            "logit_scale": first.logit_scale.detach(),
        }
        mlps = [m for head in heads for m in (head.image_mlp, *head.more_mlps)]
        state.update(_members_state(mlps, torch.cat([_prior_weights(h) for h in heads])))
        joined.load_state_dict(state)
        return joined.eval()

    def tower_heads(self) -> list[ProjectionHead]:
        """The single-tower heads this one joins (across_towers' inverse): one file per tower."""
        cfg, members = self.config, self.config.members
        one = dataclasses.replace(cfg, towers=1)
        base_dim = self.block_dim - cfg.prior_dim
        mlps = [self.image_mlp, *self.more_mlps]
        weights = _prior_weights(self)
        heads = []
        for t in range(cfg.towers):
            head = type(self)(self.block_dim, self.text_dim, one)
            state = {
                "feat_mean": self.feat_mean[t * base_dim : (t + 1) * base_dim],
                "feat_std": self.feat_std[t * base_dim : (t + 1) * base_dim],
                "logit_scale": self.logit_scale.detach(),
            }
            mine = slice(t * members, (t + 1) * members)
            state.update(_members_state(mlps[mine], weights[mine]))
            head.load_state_dict(state)
            heads.append(head.eval())
        return heads

    def save(self, path: str) -> None:
        """One small file (`HEAD_FORMAT`): the config as JSON, each weight matrix as int8 with a scale
        per row, the other tensors as fp16, deflated. The offline default's 3-member ensemble takes
        4.8 MB so (10.2 as fp16), its image vectors within a cosine of 0.99999 of the float head's."""
        arrays: dict[str, np.ndarray] = {}
        for name, tensor in self.state_dict().items():
            value = tensor.detach().float().cpu()
            if value.dim() == 2:
                scale = (value.abs().amax(1, keepdim=True) / 127.0).clamp(min=1e-12)
                arrays[f"{name}|int8"] = torch.round(value / scale).to(torch.int8).numpy()
                arrays[f"{name}|scale"] = scale.squeeze(1).numpy()
            else:
                arrays[name] = value.half().numpy()
        about = {
            "format": HEAD_FORMAT,
            "image_dim": int(self.image_dim),
            "text_dim": int(self.text_dim),
            "config": dataclasses.asdict(self.config),
        }
        arrays[_ABOUT] = np.array(json.dumps(about))
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy's stub mixes in allow_pickle

    @classmethod
    def load(cls, path: str, map_location: str | torch.device = "cpu") -> ProjectionHead:
        """A head saved by `save`, or by earlier versions (torch.save of an fp16 state dict)."""
        if zipfile.is_zipfile(path) and f"{_ABOUT}.npy" in zipfile.ZipFile(path).namelist():
            with np.load(path, allow_pickle=False) as saved:
                about = json.loads(str(saved[_ABOUT]))
                state = _dequantised({k: saved[k] for k in saved.files if k != _ABOUT})
        else:
            about = torch.load(path, map_location=map_location, weights_only=True)
            state = {k: v.float() for k, v in about.pop("state_dict").items()}
        known = {f.name for f in dataclasses.fields(HeadConfig)}
        cfg = HeadConfig(**{k: v for k, v in about["config"].items() if k in known})
        head = cls(about["image_dim"], about["text_dim"], cfg)
        head.load_state_dict(state)
        return head.eval()


HEAD_FORMAT = "xmodal.projection_head/2"
_ABOUT = "__about__"  # the npz entry that holds the format, the sizes and the config


def _dequantised(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    state = {}
    for key, array in arrays.items():
        name, _, part = key.partition("|")
        if part == "int8":
            state[name] = torch.from_numpy(array.astype(np.float32) * arrays[f"{name}|scale"][:, None])
        elif not part:
            state[name] = torch.from_numpy(array.astype(np.float32))
    return state


def _prior_weights(head: ProjectionHead) -> torch.Tensor:
    """Every member's prior weight, in member order, as one vector."""
    more = head.more_prior_weights
    return torch.cat([head.prior_weight.detach().reshape(1)] + ([more.detach()] if more is not None else []))


def _members_state(mlps: Sequence[nn.Module], prior_weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """The state-dict entries of these image MLPs and their prior weights, as members 0, 1, ..."""
    state = {f"image_mlp.{k}": v for k, v in mlps[0].state_dict().items()}
    state["prior_weight"] = prior_weights[0]
    for i, mlp in enumerate(mlps[1:]):
        state.update({f"more_mlps.{i}.{k}": v for k, v in mlp.state_dict().items()})
    if len(mlps) > 1:
        state["more_prior_weights"] = prior_weights[1:]
    return state


def _image_mlp(base_dim: int, cfg: HeadConfig) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(cfg.image_dropout),
        nn.Linear(base_dim, cfg.image_hidden),
        nn.GELU(),
        nn.Dropout(cfg.image_dropout),
        nn.Linear(cfg.image_hidden, cfg.embed_dim),
    )


def _clip_loss(img: torch.Tensor, txt: torch.Tensor, cap_owner: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; several captions may share one image (multi-positive on the i2t side)."""
    logits = scale * txt @ img.T  # (n_cap, n_img)
    t2i = F.cross_entropy(logits, cap_owner)
    # i2t: each image against all batch captions; positives = its own captions (mean of their NLLs).
    lt = logits.T.log_softmax(-1)  # (n_img, n_cap)
    pos = (cap_owner[None, :] == torch.arange(img.shape[0])[:, None]).float()
    i2t = -(lt * pos).sum(1).div(pos.sum(1).clamp(min=1)).mean()
    return 0.5 * (t2i + i2t)


def train_head(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    caption_image: torch.Tensor,
    config: HeadConfig | None = None,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> ProjectionHead:
    """Train a ProjectionHead with symmetric InfoNCE.

    image_feats: (N_img, Di) or (N_img, n_views, Di) - with views (e.g. cached crops/flips),
        one random view per image is drawn each step (augmentation).
    text_feats: (N_cap, Dt) MiniLM embeddings; caption_image: (N_cap,) index of each caption's image.
    Deterministic for a given seed (CPU, deterministic algorithms, seeded generator).
    An ensemble (config.members > 1) is its members trained from seeds seed, seed + 1, ... and joined.
    """
    cfg = config or HeadConfig()
    if cfg.towers > 1:  # each tower's members on its own block, from the same seeds as one tower alone
        one = dataclasses.replace(cfg, towers=1)
        block = image_feats.shape[-1] // cfg.towers
        per_tower = cfg.members * cfg.epochs
        heads = []
        for t in range(cfg.towers):
            report = (lambda e, loss, t=t: on_epoch(t * per_tower + e, loss)) if on_epoch is not None else None
            feats_t = image_feats[..., t * block : (t + 1) * block]
            heads.append(train_head(feats_t, text_feats, caption_image, one, seed, report))
        return ProjectionHead.across_towers(heads)
    if cfg.members > 1:
        single = dataclasses.replace(cfg, members=1)
        heads = []
        for i in range(cfg.members):  # on_epoch counts on through the members: epoch i * epochs + e
            report = (lambda e, loss, i=i: on_epoch(i * cfg.epochs + e, loss)) if on_epoch is not None else None
            heads.append(train_head(image_feats, text_feats, caption_image, single, seed + i, report))
        return ProjectionHead.ensemble(heads)
    torch.manual_seed(seed)
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    g = torch.Generator().manual_seed(seed)
    feats = image_feats.float()
    if feats.dim() == 2:
        feats = feats[:, None]
    n_img, n_views, di = feats.shape
    txt = text_feats.float()
    caption_image = caption_image.long()
    head = ProjectionHead(di, txt.shape[1], cfg)
    base = feats[..., : di - cfg.prior_dim].reshape(-1, di - cfg.prior_dim)
    head.feat_mean.copy_(base.mean(0))
    head.feat_std.copy_(base.std(0).clamp(min=1e-4))
    caps_of: list[list[int]] = [[] for _ in range(n_img)]
    for k, i in enumerate(caption_image.tolist()):
        caps_of[i].append(k)
    caps_t = [torch.tensor(c) for c in caps_of]

    text_params = list(head.text_mlp.parameters()) if head.text_mlp is not None else []
    tid = {id(p) for p in text_params}
    other = [p for n, p in head.named_parameters() if id(p) not in tid and n != "logit_scale"]
    opt = torch.optim.AdamW(
        [
            {"params": other, "lr": cfg.lr},
            {"params": text_params, "lr": cfg.lr * cfg.text_lr_mult},
            {"params": [head.logit_scale], "lr": cfg.lr, "weight_decay": 0.0},
        ],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(n_img / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch
    base_lrs = [gr["lr"] for gr in opt.param_groups]
    step = 0
    try:
        for epoch in range(cfg.epochs):
            head.train()
            perm = torch.randperm(n_img, generator=g)
            tot, nb = 0.0, 0
            for b in range(0, n_img, cfg.batch_size):
                idx = perm[b : b + cfg.batch_size]
                if len(idx) < 2:
                    continue
                # cosine schedule with linear warm-up
                f = (
                    (step + 1) / warm
                    if step < warm
                    else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
                )
                for gr, lr in zip(opt.param_groups, base_lrs):
                    gr["lr"] = lr * f
                v = torch.randint(n_views, (len(idx),), generator=g)
                x = feats[idx, v]
                if cfg.all_captions:
                    cap_idx = torch.cat([caps_t[i] for i in idx.tolist()])
                    owner = torch.cat([torch.full((len(caps_t[i]),), j) for j, i in enumerate(idx.tolist())])
                else:
                    pick = [caps_t[i][torch.randint(len(caps_t[i]), (1,), generator=g)] for i in idx.tolist()]
                    cap_idx = torch.cat(pick)
                    owner = torch.arange(len(idx))
                img_e = F.normalize(head._image_raw(x), dim=-1)
                txt_e = head.project_texts(txt[cap_idx])
                loss = _clip_loss(img_e, txt_e, owner, head.logit_scale.exp().clamp(max=100.0))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                tot += float(loss.detach())
                nb += 1
            if on_epoch is not None:
                on_epoch(epoch, tot / max(1, nb))
    finally:
        torch.use_deterministic_algorithms(prev_det)
    return head.eval()

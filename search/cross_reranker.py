"""Learned cross-modal reranker (image–text matching with co-attention, in the spirit of ALBEF/BLIP ITM).

Inputs, stored or computed once per item:
  image grid   `image_grid(towers, pixels)`: the CNN trunk's feature map average-pooled to 3×3 → (n, 9, 1280)
  text tokens  `text_tokens(towers, texts)`: MiniLM's last hidden state → (n, L, 384) + mask (n, L)

`CrossReranker.score(grid, tokens, mask, first_stage)` reads one image and one text per row and returns
a match logit; `combine(first_stage, logits)` mixes it with the first-stage cosine using a weight fitted
on held-out training pairs (stored in the model file).  `rerank_candidates` wraps both directions.

Engine usage (one query, candidates = the first stage's top K):
  net = CrossReranker.load(data_path("offline_reranker.pt"))
  text→image:  tok, m = text_tokens(towers, [query_text]); grids = stored (K, 9, 1280) fp16 grids
               final = rerank_candidates(net, cosines, grids=grids, tokens=tok, mask=m)
  image→text:  grid = stored (1, 9, 1280) grid of the query photo (or image_grid(towers, pixels[None]))
               tok, m = text_tokens(towers, candidate_texts)   # or stored tokens
               final = rerank_candidates(net, cosines, grids=grid, tokens=tok, mask=m)
  order = np.argsort(-final, kind="stable").  `cosines` are the exact first-stage scores (before
  QB-Norm); with QB-Norm, pass its corrected cosine (normalised score / β) as `first_stage` to
  `combine` and the raw cosine to `score`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    "GRID_SIZE",
    "TEXT_MAX_TOKENS",
    "RerankerConfig",
    "CrossReranker",
    "image_grid",
    "text_tokens",
    "rerank_candidates",
]

GRID_SIZE = 3
TEXT_MAX_TOKENS = 64
FORMAT = "xmodal.cross_reranker/1"


@torch.inference_mode()
def image_grid(towers: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) transformed pixels -> (n, 9, 1280) float32: trunk feature map pooled to 3×3, row-major."""
    return towers.image_features_and_grid(pixels)[1].float().contiguous()  # the map stored at index time


@torch.inference_mode()
def text_tokens(towers: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """n texts -> (tokens (n, L, 384) float32, mask (n, L) bool); L = longest text (≤ 64 tokens, incl. [CLS]/[SEP])."""
    tok = towers.tokenizer(list(texts), padding=True, truncation=True, max_length=TEXT_MAX_TOKENS, return_tensors="pt")
    out = towers.text.transformer(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
    mask = tok["attention_mask"].bool()
    return out.last_hidden_state.float() * mask[..., None], mask


@dataclasses.dataclass
class RerankerConfig:
    image_dim: int = 1280
    text_dim: int = 384
    width: int = 64
    heads: int = 4
    layers: int = 1
    dropout: float = 0.3
    grid_tokens: int = GRID_SIZE * GRID_SIZE


class _CoAttentionLayer(nn.Module):
    """Text attends to image regions and image regions attend to text; each followed by an MLP."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.t_norm = nn.LayerNorm(width)
        self.i_norm = nn.LayerNorm(width)
        self.t_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.i_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.t_mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * width, width))
        self.i_mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * width, width))

    def forward(self, t: torch.Tensor, i: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tn, inn = self.t_norm(t), self.i_norm(i)
        t2 = t + self.t_attn(tn, inn, inn, need_weights=False)[0]
        i2 = i + self.i_attn(inn, tn, tn, key_padding_mask=pad, need_weights=False)[0]
        return t2 + self.t_mlp(t2), i2 + self.i_mlp(i2)


class CrossReranker(nn.Module):
    """Scores (image grid, text tokens) pairs; higher = better match."""

    def __init__(self, config: RerankerConfig | None = None) -> None:
        super().__init__()
        cfg = config or RerankerConfig()
        self.config = cfg
        w = cfg.width
        # Per-channel standardisation of grid features, set from training data.
        self.register_buffer("grid_mean", torch.zeros(cfg.image_dim))
        self.register_buffer("grid_std", torch.ones(cfg.image_dim))
        self.i_proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.image_dim, w))
        self.t_proj = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Dropout(cfg.dropout), nn.Linear(cfg.text_dim, w))
        self.i_pos = nn.Parameter(torch.zeros(cfg.grid_tokens + 1, w))  # 9 regions + 1 global token
        nn.init.normal_(self.i_pos, std=0.02)
        self.layers = nn.ModuleList(_CoAttentionLayer(w, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.out_norm = nn.LayerNorm(4 * w)
        self.out = nn.Sequential(nn.Linear(4 * w, w), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(w, 1))
        # First-stage cosine as an input feature (scaled, added to the logit).
        self.first_stage_weight = nn.Parameter(torch.tensor(10.0))
        # combine(): final = first_stage + combine_weight * logit, fitted on held-out pairs.
        self.register_buffer("combine_weight", torch.tensor(0.0))

    def encode_image(self, grid: torch.Tensor) -> torch.Tensor:
        """(n, 9, image_dim) -> (n, 10, width): standardised regions + a global token, projected."""
        g = (grid.float() - self.grid_mean) / self.grid_std
        g = torch.cat([g.mean(1, keepdim=True), g], dim=1)
        return self.i_proj(g) + self.i_pos

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, L, text_dim) -> (n, L, width)."""
        return self.t_proj(tokens.float())

    def interact(self, i: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, first_stage: torch.Tensor) -> torch.Tensor:
        """Co-attention over encoded pairs -> (c,) logits."""
        pad = ~mask.bool()
        for layer in self.layers:
            t, i = layer(t, i, pad)
        m = mask.float()[..., None]
        t_pool = (t * m).sum(1) / m.sum(1).clamp(min=1.0)
        i_pool = i.mean(1)
        h = self.out_norm(torch.cat([t_pool, i_pool, t_pool * i_pool, (t_pool - i_pool).abs()], dim=-1))
        return self.out(h).squeeze(-1) + self.first_stage_weight * first_stage.float()

    def forward(self, grid: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, first_stage: torch.Tensor) -> torch.Tensor:
        """Logits of c pairs; a grid or a text batch of size 1 is shared by all c pairs (encoded once)."""
        c = first_stage.shape[0]
        i = self.encode_image(grid)
        t = self.encode_text(tokens)
        if i.shape[0] == 1 and c != 1:
            i = i.expand(c, -1, -1)
        if t.shape[0] == 1 and c != 1:
            t, mask = t.expand(c, -1, -1), mask.expand(c, -1)
        return self.interact(i, t, mask, first_stage)

    @torch.inference_mode()
    def score(
        self, grid: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, first_stage: torch.Tensor, batch_size: int = 512
    ) -> torch.Tensor:
        """(c, 9, 1280), (c, L, 384), (c, L), (c,) -> (c,) float32 match logits (eval mode, batched).

        grid or tokens/mask may have a leading size of 1: one query shared by all c candidates.
        """
        was_training = self.training
        self.eval()
        c = first_stage.shape[0]

        def rows(x: torch.Tensor, s: int) -> torch.Tensor:
            return x if x.shape[0] == 1 else x[s : s + batch_size]

        try:
            out = [
                self(rows(grid, s), rows(tokens, s), rows(mask, s), first_stage[s : s + batch_size])
                for s in range(0, c, batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(out).float() if out else torch.zeros(0)

    def combine(self, first_stage_scores: np.ndarray | torch.Tensor, rerank_logits: np.ndarray | torch.Tensor) -> np.ndarray:
        """Final scores = first-stage cosine + combine_weight × reranker logit."""
        first = np.asarray(first_stage_scores, dtype=np.float64)
        logits = np.asarray(rerank_logits, dtype=np.float64)
        return first + float(self.combine_weight) * logits

    def save(self, path: str | Path) -> None:
        """One small file: plain-typed config + fp16 state dict (loadable with weights_only=True)."""
        state = {k: (v.half() if v.is_floating_point() and v.dim() > 0 else v) for k, v in self.state_dict().items()}
        torch.save({"format": FORMAT, "config": dataclasses.asdict(self.config), "state_dict": state}, str(path))

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "CrossReranker":
        blob: dict[str, Any] = torch.load(str(path), map_location=map_location, weights_only=True)
        if blob.get("format") != FORMAT:
            raise ValueError(f"{path}: not a cross reranker file")
        known = {f.name for f in dataclasses.fields(RerankerConfig)}
        model = cls(RerankerConfig(**{k: v for k, v in blob["config"].items() if k in known}))
        model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
        return model.eval()


def rerank_candidates(
    reranker: CrossReranker,
    first_stage: np.ndarray,
    *,
    grids: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
) -> np.ndarray:
    """Final scores of c candidates of one query (higher = better); sort by them, descending.

    first_stage: (c,) cosines of the query with each candidate (exact scores, before QB-Norm).
    text→image: grids = the candidates' stored grids (c, 9, 1280); tokens/mask = the query's (1, L, 384)/(1, L).
    image→text: grids = the query's grid (1, 9, 1280); tokens/mask = the candidates' (c, L, 384)/(c, L).
    A query of size 1 is encoded once and shared by the c candidates.
    """
    if len(first_stage) == 0:
        return np.zeros(0, dtype=np.float64)
    logits = reranker.score(grids, tokens, mask, torch.as_tensor(np.asarray(first_stage, dtype=np.float32)))
    return reranker.combine(first_stage, logits.numpy())

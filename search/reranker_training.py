"""`xmodal train-reranker`: train the learned cross-modal reranker (search.cross_reranker) on image–caption pairs.

Recipe:
  1. Grids, text tokens and tower features are computed once and cached on disk.
  2. First-stage scores come from out-of-fold projection heads when the model has a trainable
     head (the shipped head saw the training photos, so its own scores there are over-confident):
     the photos are split into folds of ~200 (the size of the evaluation pool), a head is trained
     on the other folds, and each fold's photos and captions are embedded and mined within the fold.
  3. Hard negatives: for each caption the top-ranked wrong photos, for each photo the top-ranked
     wrong captions.  Loss: listwise softmax cross-entropy over [positive + sampled hard negatives],
     both directions.
  4. One fold is held out to choose the epoch and the combine weight (recall@1 after reranking the
     top-K, both directions); the model of the best epoch is kept (TrainConfig.refit=True instead
     retrains on all folds for that many epochs and keeps the chosen weight).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from platformdirs import user_cache_dir

from indexer.errors import InvalidInputError
from indexer.models import EmbeddingModel
from indexer.pairs import CaptionedImage
from indexer.training import cached, features_cache_file, pixel_batches
from search.cross_reranker import CrossReranker, RerankerConfig, text_tokens

__all__ = ["RerankerFeatures", "TrainConfig", "reranker_features", "fit_reranker", "train_reranker"]


@dataclasses.dataclass
class RerankerFeatures:
    grid: torch.Tensor  # (N, 9, 1280) float16
    image_feats: torch.Tensor  # (N, Di) tower features (projection head input)
    tokens: torch.Tensor  # (M, L, 384) float16
    mask: torch.Tensor  # (M, L) bool
    text_feats: torch.Tensor  # (M, Dt)
    owners: torch.Tensor  # (M,) index of each caption's photo


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 32  # queries per step (each with 1 positive + negatives candidates)
    negatives: int = 8  # hard negatives per query, sampled from the top `mine_depth` wrong items
    mine_depth: int = 30
    lr: float = 3e-4
    weight_decay: float = 0.1
    warmup_epochs: int = 1
    fold_size: int = 200  # photos per cross-fitting fold (≈ the evaluation pool)
    rerank_depth: int = 30  # K used when validating (rerank the first stage's top K)
    refit: bool = False  # retrain on all folds for the chosen epochs (default: keep the selected model)


@torch.inference_mode()
def reranker_features(
    model: EmbeddingModel, pairs: Sequence[CaptionedImage], cache_dir: Path | None = None, batch_size: int = 32
) -> RerankerFeatures:
    """Grids, tokens and tower features of the pairs, cached on disk per (model towers, pairs)."""
    return RerankerFeatures(**cached(features_cache_file(model, pairs, "reranker-1", cache_dir), lambda: dataclasses.asdict(_compute_reranker_features(model, pairs, batch_size))))


def _compute_reranker_features(model: EmbeddingModel, pairs: Sequence[CaptionedImage], batch_size: int) -> RerankerFeatures:
    towers = model.towers
    grids, feats = [], []
    for pixels in pixel_batches(model, pairs, batch_size):
        feat, grid = towers.image_features_and_grid(pixels)  # one forward pass for both
        grids.append(grid.half().cpu())
        feats.append(feat.float().cpu())
    captions = [c for pair in pairs for c in pair.captions]
    owners = torch.tensor([i for i, pair in enumerate(pairs) for _ in pair.captions], dtype=torch.long)
    tok_chunks, mask_chunks, text_chunks = [], [], []
    for s in range(0, len(captions), 256):
        tok, mask = text_tokens(towers, captions[s : s + 256])
        tok_chunks.append(tok.half().cpu())
        mask_chunks.append(mask.cpu())
        text_chunks.append(towers.text_features(captions[s : s + 256]).float().cpu())
    width = max(t.shape[1] for t in tok_chunks)
    tokens = torch.cat([F.pad(t, (0, 0, 0, width - t.shape[1])) for t in tok_chunks])
    mask = torch.cat([F.pad(m, (0, width - m.shape[1])) for m in mask_chunks])
    return RerankerFeatures(torch.cat(grids), torch.cat(feats), tokens, mask, torch.cat(text_chunks), owners)


@dataclasses.dataclass
class _Fold:
    """Photos of one fold (global indices), their captions, and within-fold first-stage similarities."""

    photos: torch.Tensor  # (n,)
    captions: torch.Tensor  # (m,)
    owner: torch.Tensor  # (m,) position of each caption's photo in `photos`
    sims: torch.Tensor  # (m, n) caption × photo first-stage cosines


def _folds(n_photos: int, fold_size: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_photos, generator=g)
    k = max(1, round(n_photos / fold_size))
    return [perm[j::k].sort().values for j in range(k)]


def _first_stage_folds(model: EmbeddingModel, feats: RerankerFeatures, fold_size: int, seed: int) -> list[_Fold]:
    """Out-of-fold first-stage similarities (a head trained without the fold), or the model's own if it has no head."""
    from indexer.projection_head import ProjectionHead, train_head

    folds = _folds(len(feats.grid), fold_size, seed)
    out = []
    for j, photos in enumerate(folds):
        in_fold = torch.zeros(len(feats.grid), dtype=torch.bool)
        in_fold[photos] = True
        caps = torch.nonzero(in_fold[feats.owners]).squeeze(1)
        pos = torch.full((len(feats.grid),), -1, dtype=torch.long)
        pos[photos] = torch.arange(len(photos))
        head = model.head
        if isinstance(head, ProjectionHead) and len(folds) > 1:
            rest = torch.nonzero(~in_fold).squeeze(1)
            rest_caps = torch.nonzero(~in_fold[feats.owners]).squeeze(1)
            rest_pos = torch.full((len(feats.grid),), -1, dtype=torch.long)
            rest_pos[rest] = torch.arange(len(rest))
            head = train_head(feats.image_feats[rest], feats.text_feats[rest_caps], rest_pos[feats.owners[rest_caps]], dataclasses.replace(head.config), seed=seed + j)
        with torch.no_grad():
            if head is not None:
                img = head.project_images(feats.image_feats[photos])
                txt = head.project_texts(feats.text_feats[caps])
            else:
                img = F.normalize(feats.image_feats[photos].float(), dim=-1)
                txt = F.normalize(feats.text_feats[caps].float(), dim=-1)
        out.append(_Fold(photos, caps, pos[feats.owners[caps]], (txt @ img.T).float()))
    return out


def _cached_folds(model: EmbeddingModel, pairs: Sequence[CaptionedImage], feats: RerankerFeatures, fold_size: int, seed: int) -> list[_Fold]:
    """_first_stage_folds, cached on disk per (features, head weights, fold size, seed)."""
    digest = hashlib.sha256(f"folds/1|{features_cache_file(model, pairs, 'pairs').stem}|{fold_size}|{seed}|".encode())
    if model.head is not None:
        for name, value in model.head.state_dict().items():
            digest.update(name.encode())
            digest.update(value.detach().float().cpu().numpy().tobytes())
    cache_file = Path(os.environ.get("XMODAL_CACHE", user_cache_dir("xmodal"))) / "features" / f"rerank-folds-{digest.hexdigest()[:24]}.pt"
    stored = cached(cache_file, lambda: [dataclasses.asdict(f) for f in _first_stage_folds(model, feats, fold_size, seed)])
    return [_Fold(**d) for d in stored]


def _queries(fold: _Fold, depth: int) -> tuple[list[tuple[int, torch.Tensor, torch.Tensor]], list[tuple[int, torch.Tensor, torch.Tensor]]]:
    """Per fold: t2i queries (caption, positive photo, hard negative photos) and i2t (photo, positive captions, hard negatives)."""
    sims = fold.sims
    t2i = []
    for q in range(sims.shape[0]):
        order = sims[q].argsort(descending=True)
        wrong = order[order != fold.owner[q]][:depth]
        t2i.append((int(fold.captions[q]), fold.photos[fold.owner[q]].view(1), fold.photos[wrong]))
    i2t = []
    for p in range(sims.shape[1]):
        order = sims[:, p].argsort(descending=True)
        own = fold.owner[order] == p
        i2t.append((int(fold.photos[p]), fold.captions[order[own]], fold.captions[order[~own][:depth]]))
    return t2i, i2t


def _listwise_loss(
    net: CrossReranker,
    feats: RerankerFeatures,
    sim_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch: list[tuple[int, torch.Tensor, torch.Tensor]],
    text_query: bool,
    negatives: int,
    g: torch.Generator,
) -> torch.Tensor:
    """Softmax cross-entropy of each query's positive against its sampled hard negatives."""
    cand_rows = []
    for query, positives, wrong in batch:
        pos = positives[torch.randint(len(positives), (1,), generator=g)]
        neg = wrong[torch.randperm(len(wrong), generator=g)[:negatives]]
        cand_rows.append(torch.cat([pos, neg]))
    c = cand_rows[0].numel()
    cands = torch.stack(cand_rows)  # (b, c), column 0 = positive
    queries = torch.tensor([q for q, _, _ in batch])
    qrep = queries[:, None].expand(-1, c).reshape(-1)
    flat = cands.reshape(-1)
    caps, photos = (qrep, flat) if text_query else (flat, qrep)
    # Encode each distinct photo / caption once, then pair them up.
    up, ip = photos.unique(return_inverse=True)
    uc, ic = caps.unique(return_inverse=True)
    length = int(feats.mask[uc].sum(1).max())  # trim shared padding
    i = net.encode_image(feats.grid[up])[ip]
    t = net.encode_text(feats.tokens[uc, :length])[ic]
    logits = net.interact(i, t, feats.mask[caps, :length], sim_of(caps, photos)).view(-1, c)
    return F.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))


def _sim_lookup(folds: list[_Fold], n_photos: int, n_caps: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """First-stage cosine of (caption, photo) global index pairs, both in the same fold."""
    cap_fold = torch.empty(n_caps, dtype=torch.long)
    cap_row = torch.empty(n_caps, dtype=torch.long)
    photo_col = torch.empty(n_photos, dtype=torch.long)
    for j, f in enumerate(folds):
        cap_fold[f.captions] = j
        cap_row[f.captions] = torch.arange(len(f.captions))
        photo_col[f.photos] = torch.arange(len(f.photos))
    sims = [f.sims for f in folds]

    def lookup(caps: torch.Tensor, photos: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(caps))
        fc = cap_fold[caps]
        for j in fc.unique().tolist():
            sel = fc == j
            out[sel] = sims[j][cap_row[caps[sel]], photo_col[photos[sel]]]
        return out

    return lookup


@torch.no_grad()
def _fold_logits(net: CrossReranker, feats: RerankerFeatures, fold: _Fold, depth: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reranker logits of each query's first-stage top `depth`: t2i (m, K) + indices, i2t (n, K) + indices (fold positions)."""
    sims = fold.sims
    k_img = min(depth, sims.shape[1])
    t2i_idx = sims.topk(k_img, dim=1).indices  # (m, K) photo positions
    caps = fold.captions[:, None].expand(-1, k_img).reshape(-1)
    photos = fold.photos[t2i_idx].reshape(-1)
    first = sims.gather(1, t2i_idx).reshape(-1)
    t2i = net.score(feats.grid[photos], feats.tokens[caps], feats.mask[caps], first).view(-1, k_img)
    k_cap = min(depth, sims.shape[0])
    i2t_idx = sims.T.topk(k_cap, dim=1).indices  # (n, K) caption positions
    photos = fold.photos[:, None].expand(-1, k_cap).reshape(-1)
    caps = fold.captions[i2t_idx].reshape(-1)
    first = sims.T.gather(1, i2t_idx).reshape(-1)
    i2t = net.score(feats.grid[photos], feats.tokens[caps], feats.mask[caps], first).view(-1, k_cap)
    return t2i, t2i_idx, i2t, i2t_idx


def _recall_at_1(fold: _Fold, t2i: torch.Tensor, t2i_idx: torch.Tensor, i2t: torch.Tensor, i2t_idx: torch.Tensor, weight: float) -> tuple[float, float]:
    """R@1 (%) both directions when the top K are re-sorted by first + weight × logit."""
    sims = fold.sims
    s = sims.gather(1, t2i_idx) + weight * t2i
    best = t2i_idx.gather(1, s.argmax(1, keepdim=True)).squeeze(1)
    r_t2i = 100.0 * (best == fold.owner).float().mean().item()
    s = sims.T.gather(1, i2t_idx) + weight * i2t
    best = i2t_idx.gather(1, s.argmax(1, keepdim=True)).squeeze(1)
    r_i2t = 100.0 * (fold.owner[best] == torch.arange(sims.shape[1])).float().mean().item()
    return r_t2i, r_i2t


WEIGHTS = (0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 1e3)


def _best_weight(net: CrossReranker, feats: RerankerFeatures, folds: list[_Fold], depth: int) -> tuple[float, float]:
    """Combine weight maximising mean R@1 (both directions) over the given folds -> (weight, that mean R@1)."""
    outs = [(f, _fold_logits(net, feats, f, depth)) for f in folds]
    best = (0.0, -1.0)
    for w in WEIGHTS:
        r = [sum(_recall_at_1(f, *o, w)) / 2 for f, o in outs]
        score = sum(r) / len(r)
        if score > best[1] + 1e-9:
            best = (w, score)
    return best


def fit_reranker(
    feats: RerankerFeatures,
    train_folds: list[_Fold],
    val_folds: list[_Fold],
    config: TrainConfig,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    net_config: RerankerConfig | None = None,
) -> tuple[CrossReranker, list[tuple[int, float, float]]]:
    """Train on train_folds; after every epoch pick the combine weight on val_folds.

    Returns the model of the best validation epoch (its combine weight set) and the
    history [(epoch, train loss, validation mean R@1)].  Without val_folds the last epoch is kept.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    cfg = net_config or RerankerConfig(image_dim=feats.grid.shape[-1], text_dim=feats.tokens.shape[-1])
    net = CrossReranker(cfg)
    flat = feats.grid.float().reshape(-1, feats.grid.shape[-1])
    net.grid_mean.copy_(flat.mean(0))
    net.grid_std.copy_(flat.std(0).clamp(min=1e-3))
    all_folds = train_folds + val_folds
    sim_of = _sim_lookup(all_folds, len(feats.grid), len(feats.owners))
    t2i_q, i2t_q = [], []
    for f in train_folds:
        a, b = _queries(f, config.mine_depth)
        t2i_q += a
        i2t_q += b
    decay = [p for n, p in net.named_parameters() if p.dim() > 1 and "pos" not in n]
    other = [p for n, p in net.named_parameters() if not (p.dim() > 1 and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": other, "weight_decay": 0.0}], lr=config.lr)
    # One step = a batch of t2i queries and a batch of i2t queries; i2t queries are cycled (fewer photos).
    steps_per_epoch = math.ceil(len(t2i_q) / config.batch_size)
    i2t_batch = max(1, math.ceil(len(i2t_q) / steps_per_epoch))
    total = config.epochs * steps_per_epoch
    warm = config.warmup_epochs * steps_per_epoch
    history: list[tuple[int, float, float]] = []
    best_state, best_score = None, -1.0
    step = 0
    for epoch in range(config.epochs):
        net.train()
        perm_t = torch.randperm(len(t2i_q), generator=g).tolist()
        perm_i = torch.randperm(len(i2t_q), generator=g).tolist()
        tot = 0.0
        for b in range(steps_per_epoch):
            f = (step + 1) / max(1, warm) if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            for gr in opt.param_groups:
                gr["lr"] = config.lr * f
            bt = [t2i_q[k] for k in perm_t[b * config.batch_size : (b + 1) * config.batch_size]]
            bi = [i2t_q[k] for k in perm_i[b * i2t_batch : (b + 1) * i2t_batch]]
            loss = _listwise_loss(net, feats, sim_of, bt, True, config.negatives, g)
            if bi:
                loss = 0.5 * (loss + _listwise_loss(net, feats, sim_of, bi, False, config.negatives, g))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tot += float(loss.detach())
        net.eval()
        score = -1.0
        if val_folds:
            w, score = _best_weight(net, feats, val_folds, config.rerank_depth)
            if score > best_score:
                best_score = score
                net.combine_weight.fill_(w)
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
        history.append((epoch, tot / max(1, steps_per_epoch), score))
        if on_epoch is not None:
            on_epoch(epoch, tot / max(1, steps_per_epoch))
    if best_state is not None:
        net.load_state_dict(best_state)
    return net.eval(), history


def train_reranker(
    model: EmbeddingModel,
    pairs: Sequence[CaptionedImage],
    out: Path,
    epochs: int | None = None,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    config: TrainConfig | None = None,
) -> Path:
    """Train a CrossReranker for the model (offline towers) on the pairs and save it to `out`."""
    cfg = dataclasses.replace(config or TrainConfig())
    if epochs is not None:
        cfg.epochs = epochs
    if not hasattr(model.towers, "visual") or not hasattr(model.towers, "tokenizer"):
        raise InvalidInputError("the learned reranker needs the offline default model's towers (xmodal-lite)")
    if len(pairs) < 4:
        raise InvalidInputError("training the reranker needs at least 4 captioned photos")
    # CPU training is deterministic for a given seed and thread count without torch's
    # deterministic-algorithms mode (which makes the index backward ~3x slower).
    feats = reranker_features(model, pairs)
    folds = _cached_folds(model, pairs, feats, cfg.fold_size, seed)
    if len(folds) > 1:
        # Hold out the last fold: choose the epoch and the combine weight there.
        net, history = fit_reranker(feats, folds[:-1], folds[-1:], cfg, seed)
        best_epoch = max(history, key=lambda h: h[2])[0]
        weight = float(net.combine_weight)
        if cfg.refit:
            net, _ = fit_reranker(feats, folds, [], dataclasses.replace(cfg, epochs=best_epoch + 1), seed, on_epoch)
            net.combine_weight.fill_(weight)
        elif on_epoch is not None:
            for e, loss, _ in history:
                on_epoch(e, loss)
    else:
        net, _ = fit_reranker(feats, folds, folds, cfg, seed, on_epoch)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net.save(out)
    return out

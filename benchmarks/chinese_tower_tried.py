"""Two ways of reading Chinese through the real English tower that were tried and did not pay.

    python -m benchmarks.chinese_tower_tried --data ../shared/datasets/flickr8k-1k [--epochs 8] [--lr 1e-3]

Same split, head and pool as benchmarks/chinese_recall.py (200 held-out train photos, a head fitted
on the other 600, pool = the 200, first stage, text -> image recall@1/5/10), printed beside the
shipped path (translation, translation + trained correction):

  input offsets   each Chinese word of the training captions (seen with at least two photos) gets
                  a learned 384-d vector added to the input-token embeddings of its English gloss,
                  fed through the frozen MiniLM tower (PyTorch) with the photos (InfoNCE) and the
                  English captions' mean vector (cosine) as teachers; zero offsets = the
                  translation. Printed after each epoch, and with the correction refitted on top.
  tower senses    each training word's sense chosen among its CC-CEDICT glosses (or dropped) by
                  the same loss through the tower over the training captions that use it (a
                  discrete search, shippable as the sense table), then the correction refitted.

Neither is shipped (benchmarks/RESULTS.md, "Chinese, third round"). Takes about 20 minutes on a
busy 2-core machine.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.chinese_recall import cached_features, dev_photo_vectors, recall, unit
from training.chinese_distillation import (
    StudentConfig,
    fit_prior,
    fit_student,
    held_out_photos,
    read_caption_pairs,
    text_tower_vectors,
)
from xmodal.indexer.models.chinese import translation as zh
from xmodal.indexer.models.chinese.student import SENTENCE_SPACE
from xmodal.indexer.models.embedding import load_model

Pieces = list[tuple[str | None, str]]  # (Chinese word or None for Latin words, the English it reads)


def pieces(translator: zh.Translator, text: str) -> Pieces:
    """The translation of `text` word by word, in the order the translation puts them."""
    tokens: list[tuple[str, str]] = []
    for found in zh._RUNS.finditer(translator.simplified(text)):
        han, latin = found.groups()
        tokens.extend([(latin, zh._LATIN)] if latin else translator.words(han))
    out: Pieces = []
    for token, tag in zh._in_english_order(tokens):
        if tag == zh._LATIN:
            out.append((None, token))
        elif (gloss := translator.gloss(token)) is not None:
            out.append((token, gloss))
    return out


def show(name: str, r: tuple[float, ...]) -> None:
    print(f"  {name:40s} R@1 {r[0]:5.1f}  R@5 {r[1]:5.1f}  R@10 {r[2]:5.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/flickr8k-1k"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = read_caption_pairs(args.data)
    model = load_model("xmodal-lite", device="cpu")
    features, english = cached_features(args.data, pairs, model)
    held = held_out_photos(len(pairs.photos), 200, 0)
    fit = np.setdiff1d(np.arange(len(pairs.photos)), held)
    photos = dev_photo_vectors(features, pairs, english, fit)
    fit_en = np.flatnonzero(np.isin(pairs.english_photo, fit))
    fit_zh = np.flatnonzero(np.isin(pairs.chinese_photo, fit))
    held_zh = np.flatnonzero(np.isin(pairs.chinese_photo, held))
    owner = pairs.chinese_photo
    fit_english = [pairs.english[i] for i in fit_en]
    prior = fit_prior([pairs.chinese[i] for i in fit_zh], owner[fit_zh], fit_english, pairs.english_photo[fit_en])
    translator = zh.Translator(prior)
    teacher = unit(np.stack([english[pairs.english_photo == p].mean(axis=0) for p in range(len(pairs.photos))]))
    translations = [translator.translate(c) for c in pairs.chinese]
    aligned = [pieces(translator, c) for c in pairs.chinese]
    known: dict[str, np.ndarray] = {}

    def vectors(texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in known})
        if missing:
            known.update(zip(missing, text_tower_vectors(model, missing, 256)))
        return np.stack([known[t] for t in texts])

    def with_student(v: np.ndarray, sense_prior: zh.SensePrior) -> tuple[float, ...]:
        student = fit_student(
            [translations[i] for i in fit_zh], v[fit_zh], owner[fit_zh], photos, teacher, sense_prior, SENTENCE_SPACE
        )
        return recall(student.correct(v[held_zh], [translations[i] for i in held_zh]), owner[held_zh], photos, held)

    print("200 held-out train photos, pool = those 200; first stage")
    base = vectors([t.english or t.source for t in translations])
    show("translation (shipped)", recall(base[held_zh], owner[held_zh], photos, held))
    show("translation + correction (shipped)", with_student(base, prior))

    # -- tower senses ------------------------------------------------------------------------
    def text_of(words: Pieces, word: str | None = None, sense: str | None = None) -> str:
        read = (sense if w == word and word is not None else g for w, g in words)
        return " ".join(x for x in read if x) or "."

    captions_of: dict[str, list[int]] = defaultdict(list)
    for i in fit_zh:
        for w in {w for w, _ in aligned[i] if w}:
            captions_of[w].append(int(i))
    fit_photos = photos[fit]
    local = {int(p): k for k, p in enumerate(fit)}

    def cost(v: np.ndarray, idx: np.ndarray) -> float:
        v = unit(v)
        logits = v @ fit_photos.T / StudentConfig.temperature
        target = np.array([local[int(owner[i])] for i in idx])
        top = logits.max(1, keepdims=True)
        ce = top[:, 0] + np.log(np.exp(logits - top).sum(1)) - logits[np.arange(len(idx)), target]
        return float((ce + (1 - (v * teacher[owner[idx]]).sum(1))).mean())

    jobs = []
    for w, idx in captions_of.items():
        if len(idx) >= 3 and len({int(owner[i]) for i in idx}) >= 2:
            current = translator.gloss(w) or ""
            jobs.append((w, current, list(dict.fromkeys([current, *translator.dictionary.senses(w)[:8], ""]))))
    t0 = time.time()
    vectors([text_of(aligned[i], w, s) for w, _, senses in jobs for s in senses for i in captions_of[w]])
    chosen, changed = dict(prior.chosen), 0
    for w, current, senses in jobs:
        idx = np.array(captions_of[w])
        scores = {s: cost(vectors([text_of(aligned[i], w, s) for i in idx]), idx) for s in senses}
        best = min(scores, key=scores.__getitem__)
        if best != current and scores[best] < scores[current]:
            chosen[w], changed = best, changed + 1
    print(f"tower senses: {len(jobs)} words searched, {changed} changed ({time.time() - t0:.0f}s)")
    searched = zh.SensePrior(prior.english_counts, chosen)
    reader = zh.Translator(searched, translator.dictionary)
    read = [" ".join(reader.translate(c).english.split()) for c in pairs.chinese]
    v = vectors([r or c for r, c in zip(read, pairs.chinese)])
    show("tower senses", recall(v[held_zh], owner[held_zh], photos, held))
    show("tower senses + correction", with_student(v, searched))

    # -- input offsets -----------------------------------------------------------------------
    towers = model.towers.loaded() if hasattr(model.towers, "loaded") else model.towers
    tokenizer, bert = towers.tokenizer, towers.text.transformer
    table = bert.embeddings.word_embeddings.weight.detach()
    seen: dict[str, set[int]] = defaultdict(set)
    for i in fit_zh:
        for w, _ in aligned[i]:
            if w:
                seen[w].add(int(owner[i]))
    row = {w: k + 1 for k, w in enumerate(sorted(w for w, p in seen.items() if len(p) >= 2))}
    sequences = []
    for words in aligned:
        ids, rows = [tokenizer.cls_token_id], [0]
        for w, gloss in words:
            t = tokenizer(gloss, add_special_tokens=False)["input_ids"]
            ids += t
            rows += [row.get(w, 0) if w else 0] * len(t)
        sequences.append((ids + [tokenizer.sep_token_id], rows + [0]))
    offsets = torch.zeros(len(row) + 1, table.shape[1], requires_grad=True)
    not_first = (torch.arange(len(row) + 1) > 0).float()[:, None]  # row 0: words without an offset

    def encode(idx: np.ndarray) -> torch.Tensor:
        longest = max(len(sequences[i][0]) for i in idx)
        ids = torch.zeros(len(idx), longest, dtype=torch.long)
        rows, mask = torch.zeros_like(ids), torch.zeros_like(ids)
        for r, i in enumerate(idx):
            a, k = sequences[i]
            ids[r, : len(a)], rows[r, : len(k)], mask[r, : len(a)] = torch.tensor(a), torch.tensor(k), 1
        out = bert(inputs_embeds=table[ids] + (offsets * not_first)[rows], attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        return F.normalize((out * m).sum(1) / m.sum(1), dim=-1)

    def encode_all(idx: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([encode(idx[b : b + 256]) for b in range(0, len(idx), 256)]).numpy()

    photo_t, teacher_t, owner_t = torch.tensor(photos), torch.tensor(teacher), torch.tensor(owner)
    optimiser = torch.optim.AdamW([offsets], lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    print(f"input offsets: {len(row)} words")
    for epoch in range(args.epochs):
        t0 = time.time()
        order = fit_zh[torch.randperm(len(fit_zh), generator=generator).numpy()]
        for b in range(0, len(order), 64):
            idx = order[b : b + 64]
            s, o = encode(idx), owner_t[idx]
            in_batch = torch.unique(o)
            logits = s @ photo_t[in_batch].T / StudentConfig.temperature
            loss = F.cross_entropy(logits, torch.searchsorted(in_batch, o)) + (1 - (s * teacher_t[o]).sum(-1)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        v = encode_all(held_zh)
        show(f"input offsets, epoch {epoch + 1} ({time.time() - t0:.0f}s)", recall(v, owner[held_zh], photos, held))
    v = np.zeros_like(base)
    v[fit_zh], v[held_zh] = encode_all(fit_zh), encode_all(held_zh)
    show("input offsets + correction", with_student(v, prior))


if __name__ == "__main__":
    main()

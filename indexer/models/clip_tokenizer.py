"""CLIP's byte-pair tokenizer without torch, for query encoders that run in onnxruntime.

open_clip's `SimpleTokenizer` returns torch tensors, and importing open_clip imports torch (seconds
from a fresh process). This is the same algorithm over the same merges file, returning NumPy ids,
so an exported text tower gets exactly the ids the model was traced with (tests compare them).
"""

from __future__ import annotations

import gzip
import html
import string
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["ClipBpeTokenizer", "CleanMode"]

CleanMode = Literal["lower", "whitespace", "canonicalize"]
_START, _END = "<start_of_text>", "<end_of_text>"
_MERGES = 49152 - 256 - 2  # how many merges of the file CLIP's vocabulary uses


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """Printable stand-ins for all 256 bytes, so BPE never sees whitespace or control bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _basic_clean(text: str) -> str:
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _clean(text: str, mode: CleanMode) -> str:
    text = _basic_clean(text)
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(str.maketrans("", "", string.punctuation))
        return " ".join(text.lower().split()).strip()
    text = " ".join(text.split()).strip()
    return text.lower() if mode == "lower" else text


class ClipBpeTokenizer:
    """Texts -> (n, context_length) int64 ids: start token, BPE ids, end token, zero padding."""

    def __init__(self, merges_file: Path, context_length: int = 77, clean: CleanMode = "lower") -> None:
        import regex

        lines = gzip.open(merges_file).read().decode("utf-8").split("\n")[1 : _MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        vocab = list(_bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [_START, _END]
        self._encoder = {token: i for i, token in enumerate(vocab)}
        self._ranks = {pair: i for i, pair in enumerate(merges)}
        self._cache: dict[str, str] = {_START: _START, _END: _END}
        self._pattern = regex.compile(
            rf"{_START}|{_END}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+", regex.IGNORECASE
        )
        self.context_length = context_length
        self.clean = clean
        self.start_id, self.end_id = self._encoder[_START], self._encoder[_END]

    def _bpe(self, token: str) -> str:
        if token in self._cache:
            return self._cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda pair: self._ranks.get(pair, float("inf")))
            if best not in self._ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        out = " ".join(word)
        self._cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        byte_map = _bytes_to_unicode()
        ids: list[int] = []
        for token in self._pattern.findall(_clean(text, self.clean)):
            mapped = "".join(byte_map[b] for b in token.encode("utf-8"))
            ids.extend(self._encoder[piece] for piece in self._bpe(mapped).split(" "))
        return ids

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.start_id, *self.encode(text), self.end_id]
            if len(ids) > self.context_length:  # truncated, but always ending on the end token
                ids = ids[: self.context_length]
                ids[-1] = self.end_id
            out[row, : len(ids)] = ids
        return out

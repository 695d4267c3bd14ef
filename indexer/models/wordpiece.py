"""BERT's WordPiece tokenizer for query encoders that run in onnxruntime, on kitoken.

The offline towers' text tower (all-MiniLM-L6-v2) was traced with the ids of Hugging Face's
`tokenizers` over its `tokenizer.json`. That package pulls in huggingface_hub and its own
dependencies (about 40 MB of the core install, for a hub the core never asks). kitoken reads the
same file (its normaliser, pre-tokeniser and vocabulary) in a 6 MB wheel; this module adds what
the traced ids also had: truncation, [CLS] and [SEP] from the file's post-processor, and padding to
the batch's longest text. Tests compare the ids with `tokenizers` on every flickr8k-1k caption,
the query bank and random Unicode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["WordPieceTokenizer"]


class WordPieceTokenizer:
    """Texts -> (n, longest) int64 ids: [CLS], the text's ids (at most max_tokens in all), [SEP], padding."""

    def __init__(self, tokenizer_file: Path, max_tokens: int, pad_id: int = 0) -> None:
        from kitoken import Kitoken

        described = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
        specials = (described.get("post_processor") or {}).get("special_tokens", {})
        self.start_ids: list[int] = list(specials.get("[CLS]", {}).get("ids", []))
        self.end_ids: list[int] = list(specials.get("[SEP]", {}).get("ids", []))
        self._tokenizer = Kitoken.from_tokenizers_file(str(tokenizer_file))
        config = self._tokenizer.config()
        config["processing"] = []  # the file's own fixed padding and truncation: ours are below
        self._tokenizer.set_config(config)
        self.max_tokens = max_tokens
        self.pad_id = pad_id

    def ids(self, text: str) -> list[int]:
        """One text's ids, without padding."""
        return self._wrap(self._tokenizer.encode(text, True))

    def _wrap(self, ids: list[int]) -> list[int]:
        room = max(self.max_tokens - len(self.start_ids) - len(self.end_ids), 0)
        return [*self.start_ids, *ids[:room], *self.end_ids]

    def __call__(self, texts: list[str]) -> np.ndarray:
        rows = [self._wrap(ids) for ids in self._tokenizer.encode_all(list(texts), True)]
        out = np.full((len(rows), max((len(r) for r in rows), default=0)), self.pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

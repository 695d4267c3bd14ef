"""The core's WordPiece tokenizer (kitoken, indexer/models/wordpiece.py) gives the ids Hugging Face's
`tokenizers` gives over the shipped text tower's tokenizer.json, with the truncation and padding the
text tower was traced with. `tokenizers` is the oracle here: the test environment has it (through
transformers, the train extra); the core install does not.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from xmodal.data import data_path
from xmodal.indexer.models.wordpiece import WordPieceTokenizer

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flickr8k-1k"
if not FLICKR.is_dir():
    FLICKR = Path("/work/shared/datasets/flickr8k-1k")
FILE = data_path("xmodal-lite") / "text.tokenizer.json"
MAX_TOKENS = 256


def _oracle() -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(FILE))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0)
    return tokenizer


def _texts() -> list[str]:
    with open(FLICKR / "captions.txt", newline="") as f:
        texts = [r["caption"] for r in csv.DictReader(f)]
    texts += data_path("querybank_captions.txt").read_text(encoding="utf-8").splitlines()
    rng = random.Random(0)
    pool = (
        "abcdeé ÉÅçñ日本語中文，。!?'\"-.()[]\t\n\x00\x0b\u200b\u00a0İßǅ😀🐕ﬁ①²Ⅷ\u0301\u3000\ufffd"
        " Straße CAFÉ naïve don't [CLS] [PAD] [MASK] [unused1]"
    )
    texts += ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(2000)]
    return texts + ["", "   ", "x" * 150, "a " + "y" * 101, "word " * 400, "a dog running on the grass"]


def test_the_ids_are_those_of_hugging_face_tokenizers() -> None:
    ours, oracle = WordPieceTokenizer(FILE, MAX_TOKENS, 0), _oracle()
    texts = _texts()
    assert len(texts) > 7000
    wrong = [t for t in texts if ours.ids(t) != oracle.encode(t).ids]
    assert wrong == []


def test_a_batch_is_padded_to_its_longest_text_as_the_towers_were_traced() -> None:
    ours, oracle = WordPieceTokenizer(FILE, MAX_TOKENS, 0), _oracle()
    batch = ["a dog", "two children play football on a sandy beach by the sea", "word " * 400, ""]
    got = ours(batch)
    assert got.dtype == np.int64 and got.shape == (4, MAX_TOKENS)
    assert np.array_equal(got, np.array([e.ids for e in oracle.encode_batch(batch)]))
    assert ours(["a dog"]).tolist() == [[101, 1037, 3899, 102]]
    assert ours([]).shape == (0, 0)

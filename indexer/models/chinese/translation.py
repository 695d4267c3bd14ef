"""Chinese text to the English words the text tower reads: traditional characters to simplified
(OpenCC), words cut by jieba (its Rust port, rjieba), each word's sense chosen from CC-CEDICT.

Sense choice: a word seen in training takes the gloss that its captions' English twins use most
(a table fitted by training/train_chinese.py); any other word takes the gloss whose words English
photo captions use most (the caption-language prior), earlier dictionary senses winning ties.
Latin words pass through, so "golden retriever 在海边" reads "golden retriever at seaside".
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xmodal.indexer.models.chinese.dictionary import ChineseDictionary, load_dictionary
from xmodal.indexer.models.chinese.script import HAN_CHARACTERS

__all__ = ["Translation", "Translator", "SensePrior", "PARTICLES"]

# Structure words with no content of their own in a photo query: particles, and measure words
# ("两只狗": two dogs, not "two only dog"), and 正在 (in the middle of doing).
# 地 and 得 are particles only where jieba tags them so (雪地: snow ground).
PARTICLES = frozenset(
    "的 了 着 之 吗 呢 吧 啊 呀 么 过 们 个 只 条 位 名 匹 头 辆 张 件 棵 座 顶 架 艘 片 根 块 把 些 正在".split()
)
_PARTICLE_TAGS = frozenset(("uv", "ud"))  # jieba's tags of the adverbial 地 and the complement 得
# Localisers close a place phrase that English opens with a preposition: 在 草地 上 -> on lawn.
LOCALISERS = {
    "上": "on",
    "上面": "on",
    "中": "in",
    "里": "in",
    "里面": "in",
    "内": "in",
    "旁": "beside",
    "旁边": "beside",
    "边": "beside",
    "下": "under",
    "下面": "under",
    "前": "in front of",
    "前面": "in front of",
    "后": "behind",
    "后面": "behind",
    "外": "outside",
    "外面": "outside",
}
_PLACE_OPENERS = frozenset("在 于 从 到".split())
_PROGRESSIVE = frozenset(("在", "正在", "正"))
_PLACE_SPAN = 4  # words between 在 and its localiser
_HEAD_WORDS = 3  # a noun phrase after the last 的 that moves to the front ("dog on lawn")
_SAME_WORD = "+"  # tag suffix of the pieces after the first of a word split by the dictionary
_LATIN = "eng"  # jieba's tag for Latin words; here, English that passes through
_NOUN_TAGS = frozenset("nrs")  # jieba tags of nouns, pronouns and places
_CLAUSE_TAGS = frozenset("vzsfp")  # jieba tags of verbs, states, places, localisers, prepositions
_RUNS = re.compile(f"([{HAN_CHARACTERS}]+)|([A-Za-z0-9][A-Za-z0-9'\\-]*)")
_MAX_WORD = 4
_GUESSED_STRAYS = 2  # single characters a split piece needs to count as read character by character


@dataclass(frozen=True)
class Translation:
    source: str
    english: str  # what the English text tower reads
    words: tuple[str, ...]  # the Chinese words found (simplified), in order
    unknown: tuple[str, ...] = ()  # words that neither the dictionary nor the training knows
    guessed: tuple[str, ...] = ()  # words the dictionary lacks, read character by character (奥利奥)


@dataclass(frozen=True)
class SensePrior:
    """What training knows about senses: English caption word counts (the caption-language prior)
    and, for words seen in training, the gloss their photos' English captions use."""

    english_counts: Mapping[str, int] = field(default_factory=dict)
    chosen: Mapping[str, str] = field(default_factory=dict)

    def score(self, gloss: str, rank: int) -> float:
        words = gloss.lower().split()
        # its least used word: "eat at" must not ride on how often captions say "at"
        fit = min(math.log1p(self.english_counts.get(w, 0)) for w in words)
        return fit - 1.0 * (len(words) - 1) - 0.3 * rank


class Translator:
    """Thread-safe; build once (the dictionary takes about a second)."""

    def __init__(self, prior: SensePrior | None = None, dictionary: ChineseDictionary | None = None) -> None:
        import opencc
        import rjieba

        self.prior = prior or SensePrior()
        self.dictionary = dictionary or load_dictionary()
        self._to_simplified = opencc.OpenCC("tw2sp")  # Taiwan phrases too: 腳踏車 -> 自行车
        self._cutter: Any = rjieba.Jieba()  # an own instance: the module-level one is shared state
        self._lock = threading.Lock()  # OpenCC's converter is not documented as thread-safe

    def simplified(self, text: str) -> str:
        with self._lock:
            return str(self._to_simplified.convert(text))

    def words(self, run: str, guessed: list[str] | None = None) -> list[tuple[str, str]]:
        """(word, part of speech) of a run of Han characters: jieba's cut and tags, and what the
        dictionary does not know split again into words it does (马路上 -> 马路 上; the pieces
        after the first carry the tag plus _SAME_WORD). Pieces read mostly character by character
        (奥利奥 -> 奥 利 奥: a name the dictionary lacks) are added to `guessed`."""
        out: list[tuple[str, str]] = []
        for piece, tag in self._cutter.tag(run):
            split = self._known_words(piece)
            read = all(self._known(w) for w in split)  # else its unknown characters are reported as such
            if guessed is not None and read and sum(map(_stray, split)) >= _GUESSED_STRAYS:
                guessed.append(piece)
            out.extend((word, tag if k == 0 else tag + _SAME_WORD) for k, word in enumerate(split))
        return out

    def _known(self, word: str) -> bool:
        return word in self.dictionary or word in self.prior.chosen or word in PARTICLES or word in LOCALISERS

    def _known_words(self, piece: str) -> list[str]:
        """The piece itself if known, else the better of forward and backward maximum matching:
        fewer words, then fewer stray single characters (马路上 -> 马路 上; 小女孩 -> 小 女孩)."""
        if self._known(piece):
            return [piece]
        forward: list[str] = []
        rest = piece
        while rest:
            size = next((n for n in range(min(_MAX_WORD, len(rest)), 1, -1) if self._known(rest[:n])), 1)
            forward.append(rest[:size])
            rest = rest[size:]
        backward: list[str] = []
        rest = piece
        while rest:
            size = next((n for n in range(min(_MAX_WORD, len(rest)), 1, -1) if self._known(rest[-n:])), 1)
            backward.insert(0, rest[-size:])
            rest = rest[:-size]

        def cost(split: list[str]) -> tuple[int, int]:
            return len(split), sum(map(_stray, split))

        return forward if cost(forward) < cost(backward) else backward

    def gloss(self, word: str) -> str | None:
        chosen = self.prior.chosen.get(word)
        if chosen is not None:
            return chosen
        senses = self.dictionary.senses(word)
        if not senses:
            return None
        return max(enumerate(senses), key=lambda s: self.prior.score(s[1], s[0]))[1]

    def translate(self, text: str) -> Translation:
        simplified = self.simplified(text)
        tokens: list[tuple[str, str]] = []  # (text, part of speech; "eng" for Latin words)
        guessed: list[str] = []
        for found in _RUNS.finditer(simplified):
            han, latin = found.groups()
            tokens.extend([(latin, _LATIN)] if latin else self.words(han, guessed))
        english: list[str] = []
        unknown: list[str] = []
        for token, tag in _in_english_order(tokens):
            if tag == _LATIN:
                english.append(token)
            elif (gloss := self.gloss(token)) is not None:
                english.append(gloss)
            else:
                unknown.append(token)
        words = tuple(t for t, tag in tokens if tag != _LATIN)
        return Translation(text, " ".join(english), words, tuple(unknown), tuple(guessed))


def _in_english_order(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Chinese word order moved toward English for the sentence tower: place phrases open with
    their preposition (在 草地 上 -> on lawn), a noun phrase after the last 的 comes first
    (草地上的狗 -> dog on lawn), and structure words go."""
    out: list[tuple[str, str]] = []
    for k, (token, tag) in enumerate(tokens):
        if _structure(token, tag) and token != "的":
            continue  # 的 is dropped last: it marks where a noun phrase's head starts
        if token in _PROGRESSIVE and k + 1 < len(tokens) and tokens[k + 1][1][:1] == "v":
            continue  # 在 before a verb marks an action in progress (两只狗在打架), not a place
        if token in LOCALISERS and out and out[-1][1] != _LATIN and out[-1][0] != "的":
            # the place phrase: back to 在 (not across 的), else the word just before
            start = len(out) - 1
            while start > 0 and out[start][1].endswith(_SAME_WORD):
                start -= 1
            for k in range(len(out) - 1, max(-1, len(out) - 2 - _PLACE_SPAN), -1):
                if out[k][0] == "的":
                    break
                if out[k][0] in _PLACE_OPENERS:
                    start = k
                    break
            phrase = [t for t in out[start:] if t[0] not in _PLACE_OPENERS]
            del out[start:]
            out.append((LOCALISERS[token], _LATIN))
            out.extend(phrase)
            continue
        out.append((token, tag))
    marks = [k for k, (t, _) in enumerate(out) if t == "的"]
    if marks:
        head, modifier = out[marks[-1] + 1 :], out[: marks[-1]]
        # a clause or a place comes after its noun in English (戴帽子的男人 -> man wear hat); a
        # plain modifier stays before it (红色的圆 -> red circle)
        clause = any(tag[:1] in _CLAUSE_TAGS or tag == _LATIN for _, tag in modifier)
        if clause and 0 < len(head) <= _HEAD_WORDS and all(tag[:1] in _NOUN_TAGS for _, tag in head):
            out = head + modifier
    return [(t, tag) for t, tag in out if not _structure(t, tag)]


def _structure(token: str, tag: str) -> bool:
    return tag != _LATIN and (token in PARTICLES or tag in _PARTICLE_TAGS)


def _stray(word: str) -> bool:
    """A single character standing for a word: a guess, unless it is a structure word or localiser."""
    return len(word) == 1 and word not in LOCALISERS and word not in PARTICLES

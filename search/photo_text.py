"""Searching the text read in photos: the database's text index finds candidates, this module scores them.

A query is cut into words (spaces; a run of Chinese, Japanese or Korean characters is one word, since
those scripts write no spaces). A word is found in a photo's text when the text holds it exactly
(case and width folded, spaces inside a CJK run ignored), or with one character wrong, missing or
extra (words of 4 characters or more; CJK words of 3 or more): OCR misreads a letter often. A
word found exactly counts 1, with one edit 1 - 1/len. A photo's score is the words' mean (by
length), plus 0.1 when the whole query appears as one phrase; `in_photo` keeps the photos where
every word is found, best first (ties: by id), `word_scores` every photo where any is.

The candidates are the texts holding one of the words' pieces (their trigrams; for a CJK word also
its character pairs, and a word shorter than 3 characters as itself): a word with one wrong
character keeps most of its pieces, so its photo is still a candidate.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from xmodal.indexer.limits import DEFAULT_LIMITS, Limits
from xmodal.indexer.store.photo_texts import candidates, escape_like

__all__ = [
    "TextMatch",
    "normalise",
    "query_words",
    "word_score",
    "match_photo_text",
    "word_scores",
    "line_matches",
]

_CJK = re.compile(r"[\u2e80-\u2fff\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_EDGE_PUNCTUATION = "\"'`.,;:!?()[]{}<>«»“”‘’、。，：；！？（）【】《》"
_PHRASE_BONUS = 0.1


@dataclass(frozen=True)
class TextMatch:
    """A photo (or a video frame) whose text matches: its score and the words of its text that matched."""

    item_id: int
    score: float
    frame_time: float | None = None
    matched: tuple[str, ...] = ()


def normalise(text: str) -> str:
    """Width and case folded (NFKC, casefold), runs of spaces made one."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def query_words(query: str, max_chars: int = DEFAULT_LIMITS.max_query_chars) -> list[str]:
    """The words of a query, normalised, edge punctuation stripped (so "42.50," is "42.50")."""
    words = []
    for raw in normalise(query[:max_chars]).split(" "):
        word = raw.strip(_EDGE_PUNCTUATION)
        if word:
            words.append(word)
    return list(dict.fromkeys(words))


def _is_cjk(word: str) -> bool:
    return bool(_CJK.search(word))


def _patterns(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """What the database's index is asked for (see the module's note): (pieces, LIKE patterns).
    A short word may keep none of its trigrams with one character wrong, so it is also asked for
    with a gap at each place (`_`: a wrong or an extra character) and with each character left out."""
    grams: list[str] = []
    likes: list[str] = []
    for word in words:
        if len(word) < 3:
            grams.append(word)
            continue
        grams.extend(word[i : i + 3] for i in range(len(word) - 2))
        if _is_cjk(word) and len(word) <= 6:
            grams.extend(word[i : i + 2] for i in range(len(word) - 1))
        if len(word) <= 5 and len(word) >= (3 if _is_cjk(word) else 4):
            for i in range(len(word)):
                head, tail = escape_like(word[:i]), escape_like(word[i + 1 :])
                likes.append(head + "_" + tail)  # one character wrong
                likes.append(head + tail)  # one missing
                likes.append(head + "_" + escape_like(word[i:]))  # one extra
    return list(dict.fromkeys(grams)), list(dict.fromkeys(likes))


def _within_one_edit(a: str, b: str) -> bool:
    """Levenshtein distance of a and b at most 1."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return a[i + 1 :] == b[i + 1 :]
    return a[i:] == b[i + 1 :]


def _found_with_one_edit(word: str, text: str) -> str | None:
    """The piece of `text` within one edit of `word`, if any. Some half of the word survives one
    edit whole, so only the places where a half occurs are tried."""
    n = len(word)
    half = n // 2
    for piece, offset in ((word[:half], 0), (word[half:], half)):
        start = text.find(piece)
        while start >= 0:
            origin = start - offset
            for length in (n - 1, n, n + 1):
                for shift in (0, -1, 1) if offset else (0,):
                    begin = origin + shift
                    if begin < 0 or begin + length > len(text):
                        continue
                    candidate = text[begin : begin + length]
                    if _within_one_edit(word, candidate):
                        return candidate
            start = text.find(piece, start + 1)
    return None


def word_score(word: str, text: str, compact: str | None = None) -> tuple[float, str | None]:
    """(score, the piece of text that matched) of one normalised query word in a normalised text.
    `compact`: the text without spaces (CJK words are looked for there)."""
    haystack = (compact if compact is not None else text.replace(" ", "")) if _is_cjk(word) else text
    if word in haystack:
        return 1.0, word
    minimum = 3 if _is_cjk(word) else 4
    if len(word) >= minimum:
        piece = _found_with_one_edit(word, haystack)
        if piece is not None:
            return 1.0 - 1.0 / len(word), piece
    return 0.0, None


def _score_text(words: Sequence[str], phrase: str, text: str) -> tuple[float, int, tuple[str, ...]]:
    """(score, words found, the pieces that matched) of one text."""
    folded = normalise(text.replace("\n", " "))
    compact = folded.replace(" ", "")
    total = weight = 0.0
    found = 0
    matched: list[str] = []
    for word in words:
        score, piece = word_score(word, folded, compact)
        total += score * len(word)
        weight += len(word)
        if piece is not None:
            found += 1
            matched.append(piece)
    score = total / weight if weight else 0.0
    if len(words) > 1 and (phrase in folded or phrase.replace(" ", "") in compact):
        score += _PHRASE_BONUS
    return score, found, tuple(matched)


def _scored(session: Session, words: Sequence[str], limits: Limits, require_all: bool) -> list[TextMatch]:
    if not words:
        return []
    phrase = " ".join(words)
    best: dict[int, TextMatch] = {}
    grams, likes = _patterns(words)
    for item_id, frame_time, text, _lines in candidates(session, grams, limits.ocr_max_candidates, likes):
        score, found, matched = _score_text(words, phrase, text)
        if found == 0 or (require_all and found < len(words)):
            continue
        if item_id not in best or score > best[item_id].score:
            best[item_id] = TextMatch(item_id, round(score, 6), frame_time, matched)
    return sorted(best.values(), key=lambda m: (-m.score, m.item_id))


def match_photo_text(session: Session, query: str, limits: Limits = DEFAULT_LIMITS) -> list[TextMatch]:
    """The photos whose text holds every word of `query` (exactly or with one character wrong),
    best first."""
    return _scored(session, query_words(query, limits.max_query_chars), limits, require_all=True)


def word_scores(session: Session, words: Sequence[str], limits: Limits = DEFAULT_LIMITS) -> dict[int, float]:
    """{photo id: score in (0, 1.1]} of every photo whose text holds any of the words: the mean
    over the words (by length) of 1 for a word found exactly, 1 - 1/len with one character wrong,
    0 when absent; +0.1 when all of them appear as one phrase."""
    cleaned = query_words(" ".join(words), limits.max_query_chars)
    return {m.item_id: m.score for m in _scored(session, cleaned, limits, require_all=False)}


def line_matches(lines: Sequence[str], query: str, max_chars: int = DEFAULT_LIMITS.max_query_chars) -> list[bool]:
    """Which of a photo's lines hold a word of `query` (exactly or with one character wrong): the
    lines the gallery highlights."""
    words = query_words(query, max_chars)
    if not words:
        return [False] * len(lines)
    out = []
    for line in lines:
        folded = normalise(line)
        compact = folded.replace(" ", "")
        out.append(any(word_score(word, folded, compact)[0] > 0 for word in words))
    return out

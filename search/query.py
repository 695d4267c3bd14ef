"""Combined queries: `"golden retriever" + ./beach.jpg - "snow"`, with weights as `2:term`."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xmodal.indexer.errors import InvalidQueryError
from xmodal.indexer.images import IMAGE_EXTENSIONS

__all__ = ["QueryTerm", "parse_query", "how_read"]

_WEIGHT = re.compile(r"^(-?\d+(?:\.\d+)?):(.+)$", re.S)


@dataclass(frozen=True)
class QueryTerm:
    weight: float
    kind: Literal["text", "image"]
    value: str


def _term(token: str, sign: float) -> QueryTerm:
    weight = 1.0
    match = _WEIGHT.match(token)
    if match:
        weight, token = float(match.group(1)), match.group(2)
    token = token.strip()
    if not token:
        raise InvalidQueryError("a query term is empty")
    try:
        path = Path(token).expanduser()
    except RuntimeError:  # an unknown ~user: still a path by its form; reading it says "no such file"
        path = Path(token)
    is_image = path.suffix.lower() in IMAGE_EXTENSIONS and (path.exists() or token.startswith(("./", "/", "~", "../")))
    return QueryTerm(sign * weight, "image" if is_image else "text", str(path) if is_image else token)


def parse_query(text: str) -> list[QueryTerm]:
    """Split a query on top-level + and - into weighted text and image terms.

    A plain sentence (no + or - between quoted terms) is one text term, so "a dog - running" stays
    text unless the parts are quoted or are image paths.
    """
    stripped = text.strip()
    if not stripped:
        raise InvalidQueryError("the query text is empty")
    try:
        tokens = shlex.split(stripped, posix=True)
    except ValueError:
        return [QueryTerm(1.0, "text", stripped)]
    if "+" not in tokens and "-" not in tokens:
        if len(tokens) == 1:
            return [_term(tokens[0], 1.0)]
        return [QueryTerm(1.0, "text", stripped)]
    terms: list[QueryTerm] = []
    sign = 1.0
    words: list[str] = []
    for token in tokens + ["+"]:
        if token in ("+", "-"):
            if words:
                terms.append(_term(" ".join(words), sign))
                words = []
            elif terms or token == "+":
                raise InvalidQueryError(f"'{token}' without a term in query: {text}")
            sign = 1.0 if token == "+" else -1.0
        else:
            words.append(token)
    return terms


def how_read(query: str | list[QueryTerm]) -> str | None:
    """One line on how a query's text terms are read when one is not plain English: 'reading "狗"
    as "dog", "雪" as "snow"' (with the words not understood), or that a language is not
    understood yet. None for English queries, pictures, and a query that does not parse.
    Deprecated (the HTTP answer's top-level `reading` only): search.understanding.read_language puts
    the same in the query's Understood."""
    from xmodal.indexer.models.chinese import reading_line

    try:
        terms = parse_query(query) if isinstance(query, str) else query
    except InvalidQueryError:
        return None
    return reading_line([t.value for t in terms if t.kind == "text"])

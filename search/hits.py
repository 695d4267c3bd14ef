"""Search results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

__all__ = ["Hit"]


@dataclass(frozen=True)
class Hit:
    """One result: an indexed image (path) or text (text, with the file it came from as path).

    `score` is the hit's own final score on the cosine scale (see search.rerank.pipeline); `copies`
    is how many near-duplicates of it were folded into it (--collapse), 0 otherwise; `matched` says
    which parts of the query it satisfies (search.understanding)."""

    id: int
    kind: Literal["image", "text"]
    score: float
    path: str
    text: str | None = None
    copies: int = 0
    # which parts of the query this hit satisfies: "visual", "text_in_photo", "place", "date", "name"
    matched: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        if self.text is None:
            out.pop("text")
        return out

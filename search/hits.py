"""Search results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

__all__ = ["Hit"]


@dataclass(frozen=True)
class Hit:
    """One result: an indexed image (path), video (path, with the `time` of its best frame) or text
    (text, with the file it came from as path).

    `score` is the hit's own final score on the cosine scale (see search.rerank.pipeline); `copies`
    is how many near-duplicates of it were folded into it (--collapse), 0 otherwise; `pair`: the
    other files of the same shot folded into it (a RAW+JPEG pair: search.pairs), empty otherwise;
    `matched` says which parts of the query it satisfies (search.understanding)."""

    id: int
    kind: Literal["image", "text", "video"]
    score: float
    path: str
    text: str | None = None
    copies: int = 0
    pair: tuple[str, ...] = ()
    time: float | None = None  # a video's moment that matched, in seconds (None for photos and texts)
    # which parts of the query this hit satisfies: "visual", "text_in_photo", "place", "date", "name"
    matched: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        if self.text is None:
            out.pop("text")
        if self.pair:
            out["pair"] = list(self.pair)
        else:
            out.pop("pair")
        return out

"""Search results."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

__all__ = ["Hit"]


@dataclass(frozen=True)
class Hit:
    """One result: an indexed image (path) or text (text, with the file it came from as path)."""

    id: int
    kind: Literal["image", "text"]
    score: float
    path: str
    text: str | None = None

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        if self.text is None:
            out.pop("text")
        return out

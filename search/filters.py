"""Filters applied inside the search (FAISS id selectors), not after a fixed top-K."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from dateutil import parser as date_parser
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from xmodal.indexer.errors import InvalidQueryError
from xmodal.indexer.store.schema import ImageRow, TextRow

__all__ = ["SearchFilter", "parse_date", "parse_min_size"]


def parse_date(text: str) -> datetime:
    """Dates as people write them: 2023-06-01, 1 June 2023, 2023-06-01T14:00."""
    try:
        return date_parser.parse(text)
    except (ValueError, OverflowError) as e:
        raise InvalidQueryError(f"cannot read date '{text}': {e}") from None


def parse_min_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise InvalidQueryError(f"--min-size must be WIDTHxHEIGHT, e.g. 1024x768, not '{text}'")
    return int(width), int(height)


@dataclass(frozen=True)
class SearchFilter:
    """Which items may be returned. Dates compare with EXIF capture time, else file mtime."""

    under: Path | None = None
    after: datetime | None = None
    before: datetime | None = None
    extensions: tuple[str, ...] = ()
    min_width: int = 0
    min_height: int = 0

    @property
    def active(self) -> bool:
        return bool(self.under or self.after or self.before or self.extensions or self.min_width or self.min_height)

    def allowed_ids(self, session: Session, kind: str) -> np.ndarray | None:
        """Ids that pass, or None when nothing is filtered."""
        if not self.active:
            return None
        if kind == "text":
            stmt = select(TextRow.id)
            if self.under:
                stmt = stmt.where(_under(TextRow.source, self.under))
            return np.fromiter(session.scalars(stmt), dtype=np.int64)
        conditions = []
        if self.under:
            conditions.append(_under(ImageRow.path, self.under))
        if self.extensions:
            exts = [e.lower() if e.startswith(".") else f".{e.lower()}" for e in self.extensions]
            conditions.append(or_(*[func.lower(ImageRow.path).like(f"%{e}") for e in exts]))
        if self.min_width:
            conditions.append(ImageRow.width >= self.min_width)
        if self.min_height:
            conditions.append(ImageRow.height >= self.min_height)
        stmt = select(ImageRow.id, ImageRow.taken_at, ImageRow.mtime_ns).where(and_(*conditions)) if conditions else select(
            ImageRow.id, ImageRow.taken_at, ImageRow.mtime_ns
        )
        ids = []
        for row_id, taken_at, mtime_ns in session.execute(stmt):
            when = taken_at or datetime.fromtimestamp(mtime_ns / 1e9)
            if self.after and when < self.after.replace(tzinfo=None):
                continue
            if self.before and when > self.before.replace(tzinfo=None):
                continue
            ids.append(row_id)
        return np.array(ids, dtype=np.int64)


def _under(column, folder: Path):  # noqa: ANN001, ANN202 - SQLAlchemy column expression
    prefix = os.path.abspath(Path(folder).expanduser()).rstrip("/")
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return or_(column == prefix, column.like(escaped + "/%", escape="\\"))

"""Filters applied inside the search (FAISS id selectors), not after a fixed top-K."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from dateutil import parser as date_parser
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from xmodal.indexer.errors import InvalidQueryError
from xmodal.indexer.paths import absolute
from xmodal.indexer.store.schema import ImageRow, TextRow, under_clause

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

    def photo_only(self) -> list[str]:
        """The filters set here that only photos have (a date, an extension, a size); texts have
        only the file they came from, so a text search with these is refused, never silently widened."""
        return [
            name
            for name, value in (
                ("after", self.after),
                ("before", self.before),
                ("ext", self.extensions),
                ("min-size", self.min_width or self.min_height),
            )
            if value
        ]

    def allowed_ids(self, session: Session, kind: str) -> np.ndarray | None:
        """Ids that pass, or None when nothing is filtered; one SQL query on either backend."""
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
            conditions.append(or_(*[func.lower(ImageRow.path).like(f"%{_escape_like(e)}", escape="\\") for e in exts]))
        if self.min_width:
            conditions.append(ImageRow.width >= self.min_width)
        if self.min_height:
            conditions.append(ImageRow.height >= self.min_height)
        if self.after:
            conditions.append(_taken(">=", self.after))
        if self.before:
            conditions.append(_taken("<=", self.before))
        return np.fromiter(session.scalars(select(ImageRow.id).where(and_(*conditions))), dtype=np.int64)


def _under(column, folder: Path):  # noqa: ANN001, ANN202 - SQLAlchemy column expression
    return under_clause(column, [str(absolute(folder))])


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _taken(op: str, moment: datetime):  # noqa: ANN202 - SQLAlchemy expression
    """The photo's time (EXIF capture time, else its file's mtime as local time) against a bound.

    A naive moment is local time, as the mtime is read; an aware one keeps its wall time (as
    before). mtime compares in nanoseconds, so no per-backend date arithmetic is needed."""
    wall = moment.replace(tzinfo=None)
    ns = int(wall.replace(microsecond=0).timestamp()) * 1_000_000_000 + wall.microsecond * 1000
    if op == ">=":
        exif, mtime = ImageRow.taken_at >= wall, ImageRow.mtime_ns >= ns - 500  # mtime rounded to µs, as before
    else:
        exif, mtime = ImageRow.taken_at <= wall, ImageRow.mtime_ns < ns + 500
    return or_(and_(ImageRow.taken_at.is_not(None), exif), and_(ImageRow.taken_at.is_(None), mtime))

"""Filters applied inside the search (FAISS id selectors), not after a fixed top-K."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from dateutil import parser as date_parser
from sqlalchemy import and_, false, func, or_, select
from sqlalchemy.orm import Session

from xmodal.indexer.errors import InvalidQueryError
from xmodal.indexer.paths import absolute
from xmodal.indexer.store.schema import FactsRow, ImageRow, TextRow, under_clause

__all__ = ["SearchFilter", "parse_date", "parse_min_size", "place_clause", "place_key"]


# Defaults for the parts a date leaves out: two different ones tell which parts were written.
_PERIOD_START = datetime(2000, 1, 1)
_OTHER_DEFAULT = datetime(2001, 2, 2, 1, 1, 1, 1)
# Width and height columns are SQL INTEGERs (32 bits on every backend).
_LARGEST_SIDE = 2**31 - 1
# mtime_ns is a 64-bit SQL integer; a bound outside it is clamped (no file is that old or new).
_NS_RANGE = (-(2**63) + 1000, 2**63 - 1000)


def parse_date(text: str) -> datetime:
    """The first moment of the period a date names: "2023" is 2023-01-01 00:00, "2023-06" or
    "June 2023" is 2023-06-01 00:00, "2023-06-01" that day's midnight, "2023-06-01T14:00" that minute.

    With SearchFilter's half-open bounds, `after=parse_date("2023"), before=parse_date("2024")` is
    the whole of 2023. The parts a date leaves out never come from today's date; a date without a
    year is refused (which year it means would depend on the day it is run)."""
    try:
        start = date_parser.parse(text, default=_PERIOD_START)
        other = date_parser.parse(text, default=_OTHER_DEFAULT)
    except (ValueError, OverflowError) as e:
        raise InvalidQueryError(f"cannot read date '{text}': {e}") from None
    if start.year != other.year:
        raise InvalidQueryError(f"cannot read date '{text}': give a year, e.g. 2023 or 2023-06-01")
    return start


def parse_min_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise InvalidQueryError(f"--min-size must be WIDTHxHEIGHT, e.g. 1024x768, not '{text}'")
    _check_side("--min-size", int(width))
    _check_side("--min-size", int(height))
    return int(width), int(height)


def _check_side(name: str, value: int) -> None:
    if not 0 <= value <= _LARGEST_SIDE:
        raise InvalidQueryError(f"{name}: a side must be between 0 and {_LARGEST_SIDE} pixels, not {value}")


def _folder(path: Path) -> Path:
    """`path` made absolute with `~` expanded; an unknown user in `~user` is a bad query, not a crash."""
    try:
        return absolute(path)
    except (RuntimeError, KeyError) as e:  # pathlib: "Could not determine home directory"
        raise InvalidQueryError(f"--under: cannot expand '{path}': no such user or home folder") from e


@dataclass(frozen=True)
class SearchFilter:
    """Which items may be returned. Dates compare with the photo's time (its facts' `taken_at`:
    EXIF capture time, a video's creation time, else the file's mtime; indexer.facts), as a
    half-open range: `after` included, `before` excluded (so consecutive periods never overlap).
    `place` keeps photos whose city, region or country has that name (case and accents aside), as
    `known_places` lists them."""

    under: Path | None = None
    after: datetime | None = None
    before: datetime | None = None
    extensions: tuple[str, ...] = ()
    min_width: int = 0
    min_height: int = 0
    place: str | None = None

    def __post_init__(self) -> None:
        _check_side("min_width", self.min_width)
        _check_side("min_height", self.min_height)
        if self.under is not None:  # checked here, so a bad folder fails before anything is searched
            _folder(self.under)

    @property
    def active(self) -> bool:
        return bool(
            self.under
            or self.after
            or self.before
            or self.extensions
            or self.min_width
            or self.min_height
            or self.place
        )

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
                ("place", self.place),
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
            conditions.append(_taken("<", self.before))
        if self.place:
            conditions.append(place_clause(session, self.place))
        stmt = select(ImageRow.id)
        if self.after or self.before:
            stmt = stmt.outerjoin(FactsRow, FactsRow.image_id == ImageRow.id)
        return np.fromiter(session.scalars(stmt.where(and_(*conditions))), dtype=np.int64)


def place_key(name: str) -> str:
    """A place name as compared: case, accents and spacing aside ("ile-de-france" is "Île-de-France")."""
    decomposed = unicodedata.normalize("NFKD", " ".join(name.split()))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def place_clause(session: Session, place: str):  # noqa: ANN201 - SQLAlchemy expression
    """Photos whose facts name `place` as their city, region or country (place_key equal). The
    names stored are looked up first (one grouped read per level) and compared in Python, the same
    on every backend (SQLite's lower() knows ASCII only); one distinct read along the place index."""
    key = place_key(place)
    names: dict[int, set[str]] = {0: set(), 1: set(), 2: set()}
    stmt = select(FactsRow.country, FactsRow.region, FactsRow.city).distinct()
    for combination in session.execute(stmt):
        for level, name in enumerate(combination):
            if name and place_key(name) == key:
                names[level].add(name)
    levels = (FactsRow.country, FactsRow.region, FactsRow.city)
    clauses = [levels[level].in_(sorted(found)) for level, found in names.items() if found]
    if not clauses:
        return false()
    return ImageRow.id.in_(select(FactsRow.image_id).where(or_(*clauses)))


def _under(column, folder: Path):  # noqa: ANN001, ANN202 - SQLAlchemy column expression
    return under_clause(column, [str(_folder(folder))])


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _taken(op: str, moment: datetime):  # noqa: ANN202 - SQLAlchemy expression
    """The photo's time against a bound: its facts' `taken_at` (indexer.facts) when it has facts,
    else (a photo indexed before facts, until the next run fills them) its EXIF capture time, else
    its file's mtime as local time. Needs FactsRow outer-joined on the photo.

    A naive moment is local time, as the mtime is read; an aware one keeps its wall time (as
    before). mtime compares in nanoseconds, so no per-backend date arithmetic is needed."""
    wall = moment.replace(tzinfo=None)
    try:
        ns = int(wall.replace(microsecond=0).timestamp()) * 1_000_000_000 + wall.microsecond * 1000
    except (ValueError, OverflowError, OSError):  # year 1: before the epoch by more than the platform reads
        ns = _NS_RANGE[0]
    ns = min(max(ns, _NS_RANGE[0]), _NS_RANGE[1])  # mtime_ns is a 64-bit column: year 9999 would overflow
    if op == ">=":
        exif, mtime = ImageRow.taken_at >= wall, ImageRow.mtime_ns >= ns - 500  # mtime rounded to µs, as before
        known = FactsRow.taken_at >= wall
    else:  # the complement of ">=": a photo is either after a moment or before it, never both
        exif, mtime = ImageRow.taken_at < wall, ImageRow.mtime_ns < ns - 500
        known = FactsRow.taken_at < wall
    before_facts = or_(and_(ImageRow.taken_at.is_not(None), exif), and_(ImageRow.taken_at.is_(None), mtime))
    return or_(and_(FactsRow.taken_at.is_not(None), known), and_(FactsRow.taken_at.is_(None), before_facts))

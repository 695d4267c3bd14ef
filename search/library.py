"""Browsing the library before searching it: its places, its months, one photo's facts.

Read from the photos' facts (indexer.facts, the `facts` table): `known_places` lists every place
name that occurs in the index with its level and count (what a query planner matches a query's
words against, and what the gallery lists); `timeline` pages through the months newest first, each
with its count and its newest photos' ids; `item_facts` is one photo's facts. Photos without a
date (no facts yet: the next index run fills them) are in no month.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import and_, extract, func, select
from sqlalchemy.orm import Session

from xmodal.indexer.errors import InvalidQueryError
from xmodal.indexer.facts import Facts
from xmodal.indexer.store.schema import FactsRow

__all__ = ["PlaceLevel", "KnownPlace", "Month", "TimelinePage", "known_places", "timeline", "item_facts", "month_of"]

PlaceLevel = Literal["city", "region", "country"]


@dataclass(frozen=True)
class KnownPlace:
    """A place name that occurs in the index: `count` photos name it at this level. `within` is
    what holds it ("Lisbon, Portugal" for the city Lisbon; the country for a region; None for a
    country), to tell two places of one name apart."""

    name: str
    level: PlaceLevel
    count: int
    within: str | None = None


@dataclass(frozen=True)
class Month:
    """One month of the timeline: "2025-06", how many photos were taken in it, the newest ones' ids."""

    month: str
    count: int
    ids: list[int]


@dataclass(frozen=True)
class TimelinePage:
    """Months newest first; `next_cursor` continues after the last of them (None: no more)."""

    months: list[Month]
    next_cursor: str | None
    undated: int


def known_places(session: Session) -> list[KnownPlace]:
    """Every city, region and country the photos' facts name, most photos first (then by name)."""
    out: list[KnownPlace] = []
    for level, columns in (
        ("city", (FactsRow.city, FactsRow.region, FactsRow.country)),
        ("region", (FactsRow.region, FactsRow.country)),
        ("country", (FactsRow.country,)),
    ):
        stmt = select(*columns, func.count()).where(columns[0].is_not(None)).group_by(*columns)
        for row in session.execute(stmt):
            name, count = row[0], int(row[-1])
            within = ", ".join(p for p in row[1:-1] if p and p != name) or None
            out.append(KnownPlace(name, level, count, within))  # type: ignore[arg-type]
    return sorted(out, key=lambda p: (-p.count, p.name.lower(), p.level))


def month_of(text: str) -> datetime:
    """The first moment of a month written "YYYY-MM" (a timeline cursor)."""
    try:
        start = datetime.strptime(text.strip(), "%Y-%m")
    except ValueError:
        raise InvalidQueryError(f"a month must be written YYYY-MM, e.g. 2025-06, not {text!r}") from None
    return start


def _next_month(start: datetime) -> datetime:
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def timeline(session: Session, cursor: str | None = None, months: int = 6, per_month: int = 8) -> TimelinePage:
    """`months` months (newest first) before the month `cursor` ("YYYY-MM", excluded; None: from
    the newest), each with its count and the ids of its `per_month` newest photos."""
    year, month = extract("year", FactsRow.taken_at), extract("month", FactsRow.taken_at)
    stmt = select(year, month, func.count()).where(FactsRow.taken_at.is_not(None))
    if cursor is not None:
        stmt = stmt.where(FactsRow.taken_at < month_of(cursor))
    stmt = stmt.group_by(year, month).order_by(year.desc(), month.desc()).limit(months + 1)
    found = [(int(y), int(m), int(n)) for y, m, n in session.execute(stmt)]
    page: list[Month] = []
    for y, m, count in found[:months]:
        start = datetime(y, m, 1)
        ids = session.scalars(
            select(FactsRow.image_id)
            .where(and_(FactsRow.taken_at >= start, FactsRow.taken_at < _next_month(start)))
            .order_by(FactsRow.taken_at.desc(), FactsRow.image_id.desc())
            .limit(per_month)
        )
        page.append(Month(f"{y:04d}-{m:02d}", count, [int(i) for i in ids]))
    undated = int(session.scalar(select(func.count()).select_from(FactsRow).where(FactsRow.taken_at.is_(None))) or 0)
    more = len(found) > months
    return TimelinePage(page, page[-1].month if more and page else None, undated)


def item_facts(session: Session, image_id: int) -> Facts | None:
    """One photo's facts, or None when it has none yet."""
    row = session.get(FactsRow, image_id)
    if row is None:
        return None
    return Facts(
        taken_at=row.taken_at,
        taken_offset=row.taken_offset,
        taken_source=row.taken_source,  # type: ignore[arg-type]
        latitude=row.latitude,
        longitude=row.longitude,
        city=row.city,
        region=row.region,
        country=row.country,
        country_code=row.country_code,
        camera_make=row.camera_make,
        camera_model=row.camera_model,
        words=row.words,
    )


def place_names(places: Sequence[KnownPlace]) -> set[str]:
    """The names, lower-case, for matching a query's words."""
    return {p.name.lower() for p in places}

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

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from xmodal.indexer.errors import InvalidQueryError
from xmodal.indexer.facts import Facts
from xmodal.indexer.store.schema import FactsRow

__all__ = [
    "PlaceLevel",
    "KnownPlace",
    "Month",
    "TimelinePage",
    "known_places",
    "place_combinations",
    "timeline",
    "item_facts",
    "month_of",
]

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


def place_combinations(session: Session) -> list[tuple[str | None, str | None, str | None, int]]:
    """(country, region, city, photos) of every combination the facts hold: one grouped read
    along the facts' place index."""
    stmt = (
        select(FactsRow.country, FactsRow.region, FactsRow.city, func.count())
        .where(or_(FactsRow.country.is_not(None), FactsRow.region.is_not(None), FactsRow.city.is_not(None)))
        .group_by(FactsRow.country, FactsRow.region, FactsRow.city)
    )
    return [(r[0], r[1], r[2], int(r[3])) for r in session.execute(stmt)]


def known_places(session: Session) -> list[KnownPlace]:
    """Every city, region and country the photos' facts name, most photos first (then by name)."""
    counts: dict[tuple[PlaceLevel, str, str | None], int] = {}
    for country, region, city, n in place_combinations(session):
        levels: tuple[tuple[PlaceLevel, str | None, tuple[str | None, ...]], ...] = (
            ("city", city, (region, country)),
            ("region", region, (country,)),
            ("country", country, ()),
        )
        for level, name, holders in levels:
            if name:
                within = ", ".join(p for p in holders if p and p != name) or None
                key = (level, name, within)
                counts[key] = counts.get(key, 0) + n
    out = [KnownPlace(name, level, n, within) for (level, name, within), n in counts.items()]
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
    the newest), each with its count and the ids of its `per_month` newest photos.

    Month by month along the facts' time index (the newest time before a bound, then the count in
    its month): the cost grows with the page's months and photos, not with the library."""
    bound = month_of(cursor) if cursor is not None else None
    page: list[Month] = []
    more = False
    while True:
        newest = select(func.max(FactsRow.taken_at))
        if bound is not None:
            newest = newest.where(FactsRow.taken_at < bound)
        moment = session.scalar(newest)
        if moment is None:
            break
        if len(page) == months:
            more = True
            break
        start = datetime(moment.year, moment.month, 1)
        in_month = and_(FactsRow.taken_at >= start, FactsRow.taken_at < _next_month(start))
        count = int(session.scalar(select(func.count()).select_from(FactsRow).where(in_month)) or 0)
        ids = session.scalars(
            select(FactsRow.image_id)
            .where(in_month)
            .order_by(FactsRow.taken_at.desc(), FactsRow.image_id.desc())
            .limit(per_month)
        )
        page.append(Month(f"{start.year:04d}-{start.month:02d}", count, [int(i) for i in ids]))
        bound = start
    undated = int(session.scalar(select(func.count()).select_from(FactsRow).where(FactsRow.taken_at.is_(None))) or 0)
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

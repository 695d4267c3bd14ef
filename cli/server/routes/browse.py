"""Browsing before searching: the library by month and its places (search.library)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from xmodal.cli.server.models import MonthItemOut, MonthOut, PlaceOut, PlacesResponse, TimelineResponse
from xmodal.cli.server.params import clean_text
from xmodal.cli.server.services import Services, get_services

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["browse"])
ServicesDep = Annotated[Services, Depends(get_services)]
_MAX_MONTHS = 48
_MAX_PER_MONTH = 60


@router.get("/timeline", response_model=TimelineResponse, summary="The photos by month taken, newest first")
def timeline_route(
    services: ServicesDep,
    cursor: Annotated[
        str | None, Query(max_length=7, description="next_cursor of the previous page (YYYY-MM): older months.")
    ] = None,
    months: Annotated[int, Query(ge=1, le=_MAX_MONTHS, description="Months per page.")] = 6,
    per_month: Annotated[int, Query(ge=0, le=_MAX_PER_MONTH, description="Newest photos listed per month.")] = 8,
) -> TimelineResponse:
    """Months with their counts and newest photos; a bad cursor is a 400 (InvalidQueryError)."""
    page = services.engine.timeline(clean_text(cursor, "cursor") if cursor else None, months, per_month)
    return TimelineResponse(
        months=[
            MonthOut(
                month=m.month,
                count=m.count,
                items=[MonthItemOut(id=i, thumbnail=f"/api/items/{i}/thumbnail") for i in m.ids],
            )
            for m in page.months
        ],
        next_cursor=page.next_cursor,
        undated=page.undated,
    )


@router.get("/places", response_model=PlacesResponse, summary="The places of the photos (city, region, country)")
def places_route(services: ServicesDep) -> PlacesResponse:
    """Every place name the photos' GPS gives, with how many photos name it, most first."""
    known = services.engine.known_places()
    return PlacesResponse(places=[PlaceOut(name=p.name, level=p.level, count=p.count, within=p.within) for p in known])

"""`xmodal places` and `xmodal timeline`: what the index holds by place and by month (search.library).

Registered in cli.app with ``app.command("places")(_run(places_command))`` (and timeline).
Exit status: 0; 2 a bad cursor; 4 no index.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from xmodal.cli.options import DbUrlOpt, IndexOpt, JsonOpt

__all__ = ["places_command", "timeline_command"]


def places_command(index_dir: IndexOpt = None, db_url: DbUrlOpt = None, as_json: JsonOpt = False) -> None:
    """List the places of the photos (city, region, country, from their GPS), most photos first:
    the names `xmodal search --place` takes."""
    from xmodal.indexer.store.index_store import IndexStore
    from xmodal.search.library import known_places

    store = IndexStore.open(index_dir, db_url)
    try:
        with store.metadata.session() as s:
            places = known_places(s)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([p.__dict__ for p in places], ensure_ascii=False))
        return
    for p in places:
        typer.echo(f"{p.count:>7,}  {p.level:<8} {p.name}" + (f" ({p.within})" if p.within else ""))


def timeline_command(
    index_dir: IndexOpt = None,
    db_url: DbUrlOpt = None,
    months: Annotated[int, typer.Option("--months", min=1, max=1200, help="How many months, newest first.")] = 24,
    before: Annotated[
        str | None, typer.Option("--before", help="Start before this month (YYYY-MM), e.g. a previous list's last.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Count the photos of each month they were taken in, newest first."""
    from xmodal.indexer.store.index_store import IndexStore
    from xmodal.search.library import timeline

    store = IndexStore.open(index_dir, db_url)
    try:
        with store.metadata.session() as s:
            page = timeline(s, before, months, per_month=0)
    finally:
        store.close()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "months": [{"month": m.month, "count": m.count} for m in page.months],
                    "next_cursor": page.next_cursor,
                    "undated": page.undated,
                }
            )
        )
        return
    for m in page.months:
        typer.echo(f"{m.month}  {m.count:>7,}")
    if page.next_cursor:
        typer.echo(f"xmodal: note: older months: xmodal timeline --before {page.next_cursor}", err=True)

"""`xmodal check`: verify an index (SQL rows against FAISS caches, files, model) and mend it.

Registered in cli.app with ``app.command("check")(_run(check))``; it takes plain typed parameters
with typer annotations, so it needs nothing from cli.app (which imports this module).

Exit status: 0 when the index is consistent (after --repair: when everything was mended),
1 when problems remain; domain errors keep their codes (4 no index, 6 locked while repairing).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from xmodal.cli.options import DbUrlOpt, IndexOpt

__all__ = ["check"]

_LABELS = {
    "rows_without_vector": "rows without a vector in FAISS",
    "vectors_without_row": "FAISS vectors without a row",
    "vector_mismatches": "FAISS vectors differing from SQL",
    "count_mismatches": "count mismatches",
    "missing_files": "files that no longer exist",
    "model_problems": "model problems",
    "bad_vectors": "rows with unusable vectors",
    "text_problems": "text in photos (readings, text index)",
}
_SHOWN = 10  # items listed per category in the human output


def check(
    index_dir: IndexOpt = None,
    db_url: DbUrlOpt = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Mend what is found: rebuild the FAISS caches from SQL, drop unusable rows; rows of missing "
            "files are kept (a drive not mounted now) unless --prune-missing.",
        ),
    ] = False,
    prune_missing: Annotated[
        bool,
        typer.Option("--prune-missing", help="With --repair, delete the rows whose files are gone (for good)."),
    ] = False,
    keep_missing: Annotated[
        bool, typer.Option("--keep-missing", hidden=True, help="The default now; accepted for old scripts.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Verify an index: every row has exactly one vector, no vector lacks a row, files exist, the model matches."""
    from xmodal.indexer.errors import InvalidInputError
    from xmodal.indexer.store.checking import check_index

    if prune_missing and (keep_missing or not repair):
        raise InvalidInputError("--prune-missing goes with --repair (and not with --keep-missing)")
    report = check_index(index_dir, db_url, repair=repair, prune_missing=prune_missing)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        typer.echo(
            f"index {report.index}: {report.images} images, {report.texts} texts, model {report.model or 'unknown'}"
        )
        for action in report.repaired:
            typer.echo(f"repaired: {action}")
        for note in report.stale_caches + report.notes:
            typer.echo(f"note: {note}")
        if report.leftover_files:
            typer.echo(
                f"note: {len(report.leftover_files)} temporary file(s) of an interrupted save: "
                f"{', '.join(report.leftover_files)}"
            )
        for name, items in report.problems.items():
            shown = ", ".join(items[:_SHOWN]) + (f", … ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")
            typer.echo(f"problem: {len(items)} {_LABELS.get(name, name)}: {shown}")
        typer.echo(
            "ok"
            if report.ok
            else "problems found"
            + ("" if repair else "; run `xmodal check --repair` to mend them")
            + (
                "; rows of missing files are kept: `xmodal check --repair --prune-missing` or `xmodal remove PATH` "
                "drops them"
                if report.missing_files
                else ""
            )
        )
    if not report.ok:
        raise typer.Exit(1)

"""`xmodal export --format clip-retrieval DIR`: hand the index's vectors on in clip-retrieval's layout.

Registered in cli.app with ``app.command("export")(_run(export_command))``.
Exit status: 0 written; 2 an unknown format; 4 no index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from xmodal.cli.options import DbUrlOpt, IndexOpt

__all__ = ["export_command"]


def export_command(
    directory: Annotated[Path, typer.Argument(help="Folder to write img_emb/, metadata/ (and texts/) into.")],
    fmt: Annotated[
        str, typer.Option("--format", help="Output layout; only clip-retrieval for now.")
    ] = "clip-retrieval",
    dtype: Annotated[
        str, typer.Option("--dtype", help="float32 (exact) or float16 (half the size, as clip-retrieval writes).")
    ] = "float32",
    index_dir: IndexOpt = None,
    db_url: DbUrlOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a line.")] = False,
) -> None:
    """Export the index's vectors and metadata (clip-retrieval layout: .npy shards + parquet metadata)."""
    from xmodal.indexer.errors import InvalidInputError
    from xmodal.indexer.interchange import export_embeddings

    if fmt != "clip-retrieval":
        raise InvalidInputError(f"unknown --format '{fmt}'; the one known format is clip-retrieval")
    if dtype not in ("float32", "float16"):
        raise InvalidInputError(f"--dtype must be float32 or float16, not '{dtype}'")
    summary = export_embeddings(directory, index_dir, db_url, dtype=dtype)  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        typer.echo(f"exported {summary.images} image and {summary.texts} text vectors to {directory}")

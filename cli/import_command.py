"""`xmodal import DIR --model SPEC`: bring embeddings computed elsewhere (clip-retrieval layout).

Registered in cli.app with ``app.command("import")(_run(import_command))``.
Exit status: 0 imported; 2 the folder or its vectors are refused (dimension, normalisation, count
against metadata); 3 the model cannot be loaded; 5 the index was built with another model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from xmodal.cli.options import DbUrlOpt, IndexOpt

__all__ = ["import_command"]


def import_command(
    directory: Annotated[
        Path,
        typer.Argument(help="Folder with img_emb/*.npy + metadata/*.parquet (image_path), or text_emb + captions."),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="The model that made the vectors (default: the one in DIR/xmodal.json, as `xmodal export` writes it).",
        ),
    ] = None,
    index_dir: IndexOpt = None,
    db_url: DbUrlOpt = None,
    image_root: Annotated[
        Path | None,
        typer.Option(
            "--image-root", help="Folder that relative image paths are relative to (default: the current one)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a line.")] = False,
) -> None:
    """Import embeddings made elsewhere (clip-retrieval's layout); they are checked before anything is written."""
    from xmodal.indexer.errors import InvalidInputError
    from xmodal.indexer.interchange import import_embeddings
    from xmodal.indexer.models.embedding import load_model
    from xmodal.indexer.models.spec import model_fingerprint, parse_model_spec

    if not directory.is_dir():
        raise InvalidInputError(f"'{directory}' is not a folder")
    if model is None:
        info = directory / "xmodal.json"
        try:
            model = json.loads(info.read_text())["model"] if info.is_file() else None
        except (OSError, ValueError, KeyError) as e:
            raise InvalidInputError(f"'{info}' is unreadable: {e}") from e
        if not model:
            raise InvalidInputError("give --model SPEC: the model that computed these vectors")
    spec = parse_model_spec(model)
    loaded = load_model(spec)  # its dimension checks the vectors; searching needs it anyway
    summary = import_embeddings(
        directory, str(spec), loaded.dim, index_dir, db_url, model_fingerprint(spec), image_root
    )
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
        return
    typer.echo(
        f"imported {summary.images} image vectors ({summary.replaced} replaced), {summary.texts} text vectors "
        f"from {len(summary.shards)} shard(s)"
    )
    if summary.missing_files:
        typer.echo(
            f"{summary.missing_files} image(s) not found on this machine: searchable, "
            "but `xmodal index` of their folder will embed them again",
            err=True,
        )

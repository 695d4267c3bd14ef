"""Options several commands share, defined once so their help reads the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["IndexOpt", "DbUrlOpt", "ModelOpt", "JsonOpt"]

IndexOpt = Annotated[
    Path | None,
    typer.Option("--index", help="Index folder (default: $XMODAL_INDEX, else the per-user data folder)."),
]
DbUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--db-url",
        help="SQLAlchemy URL of the index database, e.g. postgresql+psycopg://user:pw@host/db (default: "
        "$XMODAL_DB_URL, else the one the index was made with, else SQLite in the index folder).",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Model spec: xmodal-lite (offline default), xmodal-lite-duo (two image networks), "
        "NAME:PRETRAINED, NAME:/path/weights, SPEC+HEAD.pt",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

"""The `xmodal` command. Heavy libraries are imported inside commands, so `--help` stays instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="xmodal",
    help="Cross-modal semantic search: find photos by describing them or by showing another photo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

IndexOpt = Annotated[
    Optional[Path],
    typer.Option("--index", help="Index folder (default: $XMODAL_INDEX, else the per-user data folder)."),
]
DbUrlOpt = Annotated[Optional[str], typer.Option("--db-url", help="SQLAlchemy URL for the metadata (default: SQLite in the index folder).")]
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", help="Model spec: xmodal-lite (offline default), NAME:PRETRAINED, NAME:/path/weights, SPEC+HEAD.pt"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(message: str, code: int) -> None:
    typer.echo(f"xmodal: error: {message}", err=True)
    raise typer.Exit(code)


def _run(fn):  # noqa: ANN001, ANN202 - decorator keeps command signatures for typer
    """Map domain errors to one line on stderr and their exit code; never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        from indexer.errors import XmodalError

        try:
            return fn(*args, **kwargs)
        except XmodalError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; finished batches are kept, run the same command again to resume", 130)

    return wrapper


@app.command()
@_run
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders or image files to index (recursive).")],
    index_dir: IndexOpt = None,
    model: ModelOpt = None,
    db_url: DbUrlOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 32,
    as_json: JsonOpt = False,
) -> None:
    """Index photos: new and changed files are embedded, moved files keep their vectors, deleted ones leave."""
    from cli.progress import ProgressBar
    from indexer import Indexer

    with ProgressBar("indexing", enabled=not as_json) as bar:
        summary = Indexer(index_dir, model=model, db_url=db_url, batch_size=batch_size, on_progress=bar.update).add_paths(paths)
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        typer.echo(
            f"new {summary.new}, updated {summary.updated}, unchanged {summary.unchanged}, moved {summary.moved}, "
            f"removed {summary.removed}, failed {summary.failed} — {summary.images_per_second:.1f} images/s "
            f"({summary.seconds:.1f} s)"
        )
        if summary.failed:
            typer.echo(f"{summary.failed} file(s) failed; see `xmodal info --errors`", err=True)
    if summary.embedded + summary.unchanged + summary.moved == 0 and summary.failed:
        raise typer.Exit(1)  # nothing could be indexed


@app.command()
@_run
def search(
    query: Annotated[Optional[str], typer.Argument(help="Text to search for.")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Search by this picture instead of text.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Number of hits.")] = 10,
    index_dir: IndexOpt = None,
    model: ModelOpt = None,
    db_url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the index by text (text→image) or by a picture (image→image)."""
    from indexer.errors import InvalidQueryError
    from search import SearchEngine

    if (query is None) == (image is None):
        raise InvalidQueryError("give either a query text or --image PATH")
    engine = SearchEngine.open(index_dir, model=model, db_url=db_url)
    try:
        hits = engine.search_image(image, k=limit) if image is not None else engine.search_text(query or "", k=limit)
    finally:
        engine.close()
    if as_json:
        typer.echo(json.dumps([h.as_dict() for h in hits], ensure_ascii=False))
        return
    from cli.output import print_hits

    print_hits(hits)


@app.command()
@_run
def info(
    index_dir: IndexOpt = None,
    db_url: DbUrlOpt = None,
    errors: Annotated[bool, typer.Option("--errors", help="List the files that failed, with reasons.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show what an index holds."""
    from search.stats import failures, index_info

    if errors:
        rows = failures(index_dir, db_url)
        if as_json:
            typer.echo(json.dumps(rows, ensure_ascii=False))
        else:
            for row in rows:
                typer.echo(f"{row['path']}: {row['reason']}")
        return
    facts = index_info(index_dir, db_url)
    if as_json:
        typer.echo(json.dumps(facts))
    else:
        for key, value in facts.items():
            typer.echo(f"{key:>12}: {value}")


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `xmodal search ... | head`
        sys.stderr.close()


if __name__ == "__main__":
    main()

"""The `xmodal` command. Heavy libraries are imported inside commands, so `--help` stays instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="xmodal",
    help="Cross-modal semantic search: find photos by describing them or by showing another photo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from xmodal.cli.options import DbUrlOpt, IndexOpt, JsonOpt, ModelOpt  # noqa: E402 - after the app, like the commands
from xmodal.indexer.limits import DEFAULT_LIMITS  # noqa: E402 - a small dataclass module: --help stays instant


def _fail(message: str, code: int) -> None:
    typer.echo(f"xmodal: error: {message}", err=True)
    raise typer.Exit(code)


def _run(fn):  # noqa: ANN001, ANN202 - decorator keeps command signatures for typer
    """Map domain errors to one line on stderr and their exit code; never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        from xmodal.indexer.errors import XmodalError

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
    paths: Annotated[list[Path] | None, typer.Argument(help="Folders or image files to index (recursive).")] = None,
    index_dir: IndexOpt = None,
    model: ModelOpt = None,
    db_url: DbUrlOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model batch.")] = 32,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Embed on Ray: --ray (a local cluster), --ray auto (the running one), --ray HOST:PORT or ray://HOST:10001.",
        ),
    ] = None,
    from_list: Annotated[
        Path | None,
        typer.Option(
            "--from-list",
            help="Files to index from a listing (.txt: a path a line; .parquet: a path column) "
            "instead of walking PATHs.",
        ),
    ] = None,
    prune_missing: Annotated[
        bool,
        typer.Option(
            "--prune-missing",
            help="Remove the rows of every missing file under PATHs, even of a folder that is not there or empty "
            "(an unmounted drive) or of more than half the index.",
        ),
    ] = False,
    no_video: Annotated[
        bool, typer.Option("--no-video", help="Skip videos (indexed by default: sampled frames).")
    ] = False,
    no_ocr: Annotated[
        bool, typer.Option("--no-ocr", help="Do not read the text in photos (the second stage, after embedding).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index photos: new and changed files are embedded, moved files keep their vectors, deleted ones leave.

    A folder that is not there or is empty (an unmounted drive) is offline: its rows are kept, as
    are all rows of missing files when more than half the index is missing; --prune-missing or
    `xmodal remove PATH` drops them."""
    from xmodal.cli.progress import ProgressBar
    from xmodal.cli.scale_options import listing, ray_options
    from xmodal.indexer import Indexer
    from xmodal.indexer.errors import InvalidInputError

    paths = list(paths or [])
    on_ray = ray_options(ray, paths)
    if not paths and from_list is None:
        raise InvalidInputError("give the folders to index (PATH...) or --from-list FILE")
    with ProgressBar("indexing", enabled=not as_json) as bar:
        indexer = Indexer(
            index_dir,
            model=model,
            db_url=db_url,
            batch_size=batch_size,
            on_progress=bar.update,
            ray=on_ray,
            video=not no_video,
            read_text=not no_ocr,
        )
        summary = indexer.add_paths(paths, listing=listing(from_list), prune_missing=prune_missing)
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        rate = f"{summary.images_per_second:.1f} images/s, " if summary.embedded else ""
        typer.echo(
            f"new {summary.new}, updated {summary.updated}, unchanged {summary.unchanged}, moved {summary.moved}, "
            f"removed {summary.removed}, failed {summary.failed} — {rate}{summary.seconds:.2f} s"
        )
        if summary.skipped:
            kinds = ", ".join(f"{ext} {n}" for ext, n in sorted(summary.skipped.items()))
            typer.echo(
                f"skipped {sum(summary.skipped.values())} file(s) of kinds xmodal does not read ({kinds}); "
                "see `xmodal info --errors`",
                err=True,
            )
        if summary.videos_need_extra:
            from xmodal.indexer.videos import VIDEO_EXTRA_REASON

            typer.echo(
                f"xmodal: note: {summary.videos_need_extra} video(s) not indexed: {VIDEO_EXTRA_REASON}", err=True
            )
        if summary.failed > summary.videos_need_extra:
            typer.echo(f"{summary.failed} file(s) failed; see `xmodal info --errors`", err=True)
        _say_photo_text(summary.photo_text)
        if summary.facts_filled:
            filled = summary.facts_filled
            typer.echo(f"read the dates, places and cameras of {filled} photo(s) indexed before", err=True)
        for root in summary.offline_roots:
            typer.echo(f"xmodal: warning: {root} is offline (not there or empty): its photos are kept", err=True)
        if summary.kept_missing:
            typer.echo(
                f"xmodal: warning: kept {summary.kept_missing} row(s) of missing files; if they are gone for good: "
                "`xmodal index --prune-missing PATH` or `xmodal remove PATH`",
                err=True,
            )
    if summary.embedded + summary.unchanged + summary.moved == 0 and summary.failed:
        raise typer.Exit(1)  # nothing could be indexed


def _say_photo_text(done: object) -> None:
    """The text stage's line: what it read, or why it did not run (one note, never a traceback)."""
    if done is None:
        return
    if getattr(done, "note", None):
        typer.echo(f"xmodal: note: {done.note}", err=True)  # type: ignore[attr-defined]
    elif getattr(done, "read", 0):
        frames = getattr(done, "frames", 0)
        typer.echo(
            f"text in photos: read {done.read}, with text {done.with_text}, "  # type: ignore[attr-defined]
            f"not readable {done.failed}"  # type: ignore[attr-defined]
            + (f" ({frames} of them video frames)" if frames else "")
            + f" — {done.seconds:.2f} s"  # type: ignore[attr-defined]
        )


@app.command()
@_run
def search(
    query: Annotated[
        str | None,
        typer.Argument(
            help='Text, or a combination: \'"golden retriever" + ./beach.jpg - "snow"\', weights as 2:term.'
        ),
    ] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Search by this picture.")] = None,
    in_photo: Annotated[
        str | None,
        typer.Option(
            "--in-photo",
            help="Only photos whose text holds these words (read at indexing; one wrong character still matches): "
            '--in-photo "total 42.50". Alone: best text match first; with a query: ranked by the query.',
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=DEFAULT_LIMITS.max_k, help="Number of hits.")] = 10,
    target: Annotated[str, typer.Option("--target", help="What to find: image or text.")] = "image",
    index_dir: IndexOpt = None,
    model: ModelOpt = None,
    db_url: DbUrlOpt = None,
    candidates: Annotated[
        int,
        typer.Option(
            "--candidates", min=1, max=DEFAULT_LIMITS.max_depth, help="First-stage candidates re-ranked together."
        ),
    ] = 100,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="First stage only.")] = False,
    diverse: Annotated[
        float | None,
        typer.Option("--diverse", min=0.0, max=1.0, help="MMR λ: 1 = relevance only, lower = more varied."),
    ] = None,
    collapse: Annotated[
        float | None,
        typer.Option(
            "--collapse",
            min=0.0,
            max=1.0,
            help="Fold near-duplicates (cosine at least this, e.g. 0.97) into one hit: the best copy (most "
            "pixels, then largest file, then oldest), with the number of copies folded.",
        ),
    ] = None,
    min_score: Annotated[
        str | None,
        typer.Option(
            "--min-score",
            help="Every hit scores at least this (a filter on each hit's own score, also with --diverse); "
            "'auto': a floor set from the scores of the top --candidates, not from -n.",
        ),
    ] = None,
    under: Annotated[Path | None, typer.Option("--under", help="Only files under this folder.")] = None,
    after: Annotated[
        str | None,
        typer.Option(
            "--after",
            help="Only photos taken (EXIF, a video's creation time, else mtime) from the start of this date on: "
            "2023 = from 1 Jan 2023, "
            "2023-06 = from 1 June.",
        ),
    ] = None,
    before: Annotated[
        str | None,
        typer.Option(
            "--before",
            help="Only photos taken before the start of this date: --after 2023 --before 2024 = the photos of 2023.",
        ),
    ] = None,
    ext: Annotated[
        list[str] | None, typer.Option("--ext", help="Only these extensions (repeatable: --ext jpg --ext png).")
    ] = None,
    min_size: Annotated[str | None, typer.Option("--min-size", help="Only photos at least WIDTHxHEIGHT.")] = None,
    place: Annotated[
        str | None,
        typer.Option(
            "--place",
            help="Only photos taken in this city, region or country (named from their GPS; see `xmodal places`).",
        ),
    ] = None,
    literal: Annotated[
        bool,
        typer.Option(
            "--literal",
            help="Search the whole text as a description: do not read dates, places, words in the photo or "
            'names out of it (by default "dog in Lisbon last summer" keeps the photos of Lisbon, last summer).',
        ),
    ] = False,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    links: Annotated[
        Path | None, typer.Option("--links", help="Also make symlinks to the hits in this folder.")
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write an HTML contact sheet to this file.")] = None,
) -> None:
    """Search by text, picture or a combination, for images (default) or indexed texts (--target text)."""
    from xmodal.indexer.errors import InvalidQueryError
    from xmodal.search import SearchEngine
    from xmodal.search.filters import SearchFilter, parse_date, parse_min_size
    from xmodal.search.rerank.stages import RerankOptions
    from xmodal.search.understanding import Understood

    if (query is not None and image is not None) or (query is None and image is None and in_photo is None):
        raise InvalidQueryError("give either a query text or --image PATH (or --in-photo TEXT)")
    if target not in ("image", "text"):
        raise InvalidQueryError(f"--target must be 'image' or 'text', not '{target}'")
    cutoff: float | str | None = None
    if min_score is not None:
        try:
            cutoff = "auto" if min_score == "auto" else float(min_score)
        except ValueError:
            raise InvalidQueryError(f"--min-score must be a number or 'auto', not '{min_score}'") from None
    width, height = parse_min_size(min_size) if min_size else (0, 0)
    filters = SearchFilter(
        under=under,
        after=parse_date(after) if after else None,
        before=parse_date(before) if before else None,
        extensions=tuple(ext or ()),
        min_width=width,
        min_height=height,
        place=" ".join(place.split()) or None if place else None,
    )
    rerank = False if no_rerank else RerankOptions(candidates=candidates, diverse=diverse, duplicate_threshold=collapse)
    with SearchEngine.open(index_dir, model=model, db_url=db_url) as engine:
        searched: Path | str | Understood | None = image if image is not None else query
        understood: Understood | None = None
        if query is not None and not literal and target == "image" and in_photo is None:
            searched = understood = engine.understand(query)
        hits = engine.search(
            searched,
            k=limit,
            target=target,  # type: ignore[arg-type]  # checked above: "image" or "text"
            filters=filters,
            rerank=rerank,
            min_score=cutoff,  # type: ignore[arg-type]
            in_photo=in_photo,
            literal=literal,
        )
    # how the query was read, once the search ran (a search that fails says only why): one line,
    # for a query the planner read and for one searched as it is (its language is still read)
    if understood is None and query is not None:
        from xmodal.search.understanding import read_literally

        understood = read_literally(query)
    if understood is not None and understood.explained:
        typer.echo(f"xmodal: {understood.line()}", err=True)
    if links is not None:
        from xmodal.search.export import link_hits

        link_hits(hits, links)
    if html is not None:
        from xmodal.search.export import write_contact_sheet

        write_contact_sheet(hits, html, title=f"xmodal: {query if query is not None else image or in_photo}")
    if as_json:
        typer.echo(json.dumps([h.as_dict() for h in hits], ensure_ascii=False))
    elif as_csv:
        from xmodal.search.export import hits_to_csv

        typer.echo(hits_to_csv(hits), nl=False)
    else:
        from xmodal.cli.output import print_hits

        print_hits(hits)


@app.command()
@_run
def tag(
    paths: Annotated[list[Path], typer.Argument(help="Image files to tag.")],
    labels: Annotated[str | None, typer.Option("--labels", help='Comma-separated labels: "cat,dog,beach".')] = None,
    labels_file: Annotated[Path | None, typer.Option("--labels-file", help="A file with one label per line.")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Labels to show per image.")] = 3,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Zero-shot labels with probabilities (prompt ensembles such as "a photo of a {}")."""
    from xmodal.indexer.errors import InvalidQueryError
    from xmodal.indexer.models.embedding import load_model
    from xmodal.indexer.text_sources import read_text_items
    from xmodal.search.tagging import tag_images

    if (labels is None) == (labels_file is None):
        raise InvalidQueryError("give either --labels or --labels-file")
    names = read_text_items(labels_file) if labels_file else [x for x in (labels or "").split(",")]
    results = tag_images(load_model(model), paths, names)
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {"path": str(p), "labels": [{"label": lb, "probability": round(pr, 4)} for lb, pr in r[:top]]}
                    if not isinstance(r, str)
                    else {"path": str(p), "error": r}
                    for p, r in results
                ],
                ensure_ascii=False,
            )
        )
        if any(isinstance(result, str) for _, result in results):
            raise typer.Exit(1)
        return
    for path, result in results:
        if isinstance(result, str):
            typer.echo(f"xmodal: error: {path}: {result}", err=True)
        else:
            typer.echo(f"{path}: " + ", ".join(f"{label} {prob:.2f}" for label, prob in result[:top]))
    if any(isinstance(result, str) for _, result in results):
        raise typer.Exit(1)  # some files could not be read: said on stderr above, one line each


@app.command()
@_run
def info(
    index_dir: IndexOpt = None,
    db_url: DbUrlOpt = None,
    errors: Annotated[bool, typer.Option("--errors", help="List the files that failed, with reasons.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show what an index holds."""
    from xmodal.search.stats import failures, index_info

    if errors:
        rows = failures(index_dir, db_url)
        if as_json:
            typer.echo(json.dumps(rows, ensure_ascii=False))
        else:
            for row in rows:
                typer.echo(f"{row['path']}: {row['reason']}")
        return
    from xmodal.indexer.roots import indexed_roots, offline_roots
    from xmodal.indexer.store.index_store import IndexStore

    facts = index_info(index_dir, db_url)
    store = IndexStore.open(index_dir, db_url)
    try:
        roots = indexed_roots(store.metadata)
        facts["roots"] = roots
        facts["offline_roots"] = offline_roots(store.metadata, roots)  # not there or empty: rows kept
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(facts))
    else:
        for key, value in facts.items():
            if key == "bytes_per_photo" and isinstance(value, dict):  # what each stored part costs
                value = ", ".join(f"{part.replace('_', ' ')} {size:,}" for part, size in value.items()) or "-"
            elif key == "signals" and isinstance(value, dict):  # per signal: what the index holds of it
                value = "; ".join(
                    f"{name} " + ", ".join(f"{part.replace('_', ' ')} {n:,}" for part, n in counts.items())
                    for name, counts in value.items()
                )
            elif isinstance(value, list):
                value = ", ".join(value) or "-"
            typer.echo(f"{key:>12}: {value}")


@app.command()
@_run
def remove(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders whose photos leave the index.")],
    index_dir: IndexOpt = None,
    db_url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove the index's photos at or under PATHs, whether or not the files exist (e.g. a drive retired)."""
    from xmodal.indexer import Indexer

    removed = Indexer(index_dir, db_url=db_url).remove_paths(paths)
    if as_json:
        typer.echo(json.dumps({"removed": removed}))
    else:
        typer.echo(f"removed {removed}")


@app.command("index-text")
@_run
def index_text(
    files: Annotated[list[Path], typer.Argument(help="Text files: plain (one item per line), .csv, .jsonl.")],
    column: Annotated[str | None, typer.Option("--column", help="CSV column holding the text.")] = None,
    field: Annotated[str | None, typer.Option("--field", help="JSONL field holding the text.")] = None,
    index_dir: IndexOpt = None,
    model: ModelOpt = None,
    db_url: DbUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Index texts (captions, descriptions, tags) into the same space as the photos."""
    from xmodal.indexer.text_indexing import TextIndexer

    summary = TextIndexer(index_dir, model=model, db_url=db_url).add_files(files, column=column, field=field)
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        typer.echo(
            f"new {summary.new}, unchanged {summary.unchanged}, removed {summary.removed} ({summary.seconds:.1f} s)"
        )


PairsArg = Annotated[
    Path, typer.Argument(help="Pairs: JSONL {image, captions}, CSV image,caption, or COCO captions JSON.")
]
ImageRootOpt = Annotated[
    Path | None, typer.Option("--image-root", help="Folder the CSV/COCO image names are relative to.")
]


@app.command("eval")
@_run
def evaluate(
    pairs: PairsArg,
    model: ModelOpt = None,
    image_root: ImageRootOpt = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Measure the first stage alone.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure recall@1/5/10 for text→image and image→text on captioned photos."""
    from xmodal.indexer.models.embedding import load_model
    from xmodal.indexer.pairs import read_pairs
    from xmodal.search.evaluation import evaluate_pairs

    data = read_pairs(pairs, image_root)
    result = evaluate_pairs(data, load_model(model), rerank=not no_rerank)
    for path, reason in result.skipped:
        typer.echo(f"xmodal: warning: skipped photo '{path}': {reason}", err=True)
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    typer.echo(f"{result.images} photos, {result.captions} captions (pool: all of them)")
    typer.echo(f"{'direction':<26}{'R@1':>8}{'R@5':>8}{'R@10':>8}")
    rows = [("text→image", result.text_to_image), ("image→text", result.image_to_text)]
    if result.image_to_text_held_out is not None:
        rows.append(("image→text (held-out bank)", result.image_to_text_held_out))
    for name, scores in rows:
        typer.echo(f"{name:<26}" + "".join(f"{scores[f'recall@{k}']:>8.1f}" for k in (1, 5, 10)))
    if result.image_to_text_held_out is not None:
        from xmodal.search.evaluation import BANK_POLICY

        typer.echo(
            f"QB-Norm banks: text→image: {BANK_POLICY['text_to_image']}; image→text: {BANK_POLICY['image_to_text']}; "
            f"held-out: {BANK_POLICY['image_to_text_held_out']}"
        )
    cost = result.ms_per_query
    typer.echo(
        f"search + {'rerank' if not no_rerank else 'no rerank'}: {cost['text_to_image']:.2f} ms per text query, "
        f"{cost['image_to_text']:.2f} ms per image query (query embedding excluded)"
    )


@app.command()
@_run
def optimize(
    index_dir: IndexOpt = None,
    db_url: DbUrlOpt = None,
    lean: Annotated[
        bool,
        typer.Option("--lean", help="Compressed codes in RAM, full vectors memory-mapped (≤ ~128 bytes a vector)."),
    ] = False,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            "--memory-budget",
            help="Build from the database in streamed chunks within this much RAM, e.g. 2GB "
            "(lean; lists on disk if needed).",
        ),
    ] = None,
) -> None:
    """Choose the FAISS index type for the collection's size now (it also switches by itself as it grows)."""
    from xmodal.indexer.errors import InvalidInputError
    from xmodal.indexer.store.bounded_build import parse_bytes
    from xmodal.indexer.store.index_store import IndexStore

    try:
        budget = parse_bytes(memory_budget) if memory_budget is not None else None
    except ValueError as e:
        raise InvalidInputError(f"--memory-budget: {e}") from None
    store = IndexStore.open(index_dir, db_url)
    try:
        for kind, description in store.optimize(lean=lean, memory_budget=budget).items():
            typer.echo(f"{kind}s: {description}")
    finally:
        store.close()


from xmodal.cli.check_command import check as _check  # noqa: E402 - registered like the commands above

app.command("check")(_run(_check))

from xmodal.cli.train_command import train as _train  # noqa: E402

app.command("train")(_run(_train))

from xmodal.cli.mcp_command import mcp as _mcp  # noqa: E402 - the mcp package is imported inside

app.command("mcp")(_run(_mcp))

from xmodal.cli.browse_command import places_command as _places_command  # noqa: E402
from xmodal.cli.browse_command import timeline_command as _timeline_command  # noqa: E402
from xmodal.cli.export_command import export_command as _export_command  # noqa: E402
from xmodal.cli.import_command import import_command as _import_command  # noqa: E402
from xmodal.cli.serve_command import serve as _serve  # noqa: E402 - FastAPI/uvicorn are imported inside
from xmodal.cli.watch_command import watch as _watch  # noqa: E402

app.command("serve")(_run(_serve))
app.command("watch")(_run(_watch))
app.command("import")(_run(_import_command))
app.command("export")(_run(_export_command))
app.command("places")(_run(_places_command))
app.command("timeline")(_run(_timeline_command))


def main() -> None:
    """Entry point: usage errors and domain errors become one `xmodal: error: …` line."""
    from xmodal.cli.scale_options import bare_ray_flag

    try:
        code = app(args=bare_ray_flag(sys.argv[1:]), prog_name="xmodal", standalone_mode=False)
    except BrokenPipeError:  # `xmodal search ... | head`
        sys.stderr.close()
        return
    except KeyboardInterrupt:
        print("xmodal: error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # usage errors of typer's bundled click: unknown option/command, bad value
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        ctx = getattr(e, "ctx", None)
        message = (e.format_message().strip().splitlines() or [type(e).__name__])[0]
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"xmodal: error: {message}{hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

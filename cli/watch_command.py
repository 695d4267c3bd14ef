"""`xmodal watch`: keep an index current as photos appear, change, move or vanish; the model stays loaded.

Registered in cli.app with ``app.command("watch")(_run(watch))``. Runs until Ctrl-C (exit 0). Each
index run prints one line, as `xmodal index` does; `--json` prints one JSON object per run.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xmodal.cli.options import DbUrlOpt, IndexOpt

if TYPE_CHECKING:
    from xmodal.indexer.decode_pool import StartMethod
    from xmodal.indexer.indexing import Indexer
    from xmodal.indexer.watching import CatchUp, FolderWatcher, WatchRun

__all__ = ["watch", "start_watcher", "decode_start_method"]


def _describe(run: WatchRun) -> str:
    s = run.summary
    return (
        f"new {s.new}, updated {s.updated}, moved {s.moved}, removed {s.removed}, failed {s.failed}, "
        f"unchanged {s.unchanged} — {s.seconds:.2f} s ({', '.join(run.folders)})"
    )


def start_watcher(
    indexer: Indexer,
    roots: Sequence[str | Path],
    *,
    debounce: float = 1.0,
    as_json: bool = False,
    on_change: Callable[[], None] | None = None,
    catch_up: CatchUp = "background",
) -> FolderWatcher:
    """A started watcher that reports each run on stderr (stdout with as_json)."""
    from xmodal.indexer.watching import FolderWatcher, WatchRun

    def on_run(run: WatchRun) -> None:
        if as_json:
            typer.echo(json.dumps({"folders": list(run.folders), **run.summary.as_dict()}))
        elif run.summary.embedded or run.summary.moved or run.summary.removed or run.summary.failed:
            typer.echo(f"xmodal: indexed: {_describe(run)}", err=True)
        if not as_json and (run.summary.offline_roots or run.summary.kept_missing):
            offline = ", ".join(run.summary.offline_roots) or "none"
            typer.echo(
                f"xmodal: warning: kept {run.summary.kept_missing} row(s) of missing files (offline: {offline}); "
                "`xmodal remove PATH` drops them if they are gone for good",
                err=True,
            )
        if on_change is not None and (run.summary.embedded or run.summary.moved or run.summary.removed):
            on_change()

    def on_error(error: BaseException) -> None:
        typer.echo(f"xmodal: warning: {error}", err=True)

    watcher = FolderWatcher(indexer, list(roots), debounce=debounce, on_run=on_run, on_error=on_error)
    summary = watcher.start(catch_up)  # "now": errors (a model mismatch, a locked index) end the command
    if summary is not None:
        on_run(WatchRun(tuple(watcher.roots), summary))
    return watcher


def decode_start_method() -> StartMethod | None:
    """How index runs started inside a threaded process (the server, the watcher) start their decode
    workers: forkserver. A fork from a process whose other threads are inside NumPy/BLAS or ONNX can
    deadlock (seen: a search's matrix product and a watcher run's fork, both stuck); the fork server
    is exec'd fresh, once, with the decode stage's imports preloaded, and forks the workers itself."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None  # spawn platforms: already safe
    multiprocessing.set_forkserver_preload(
        ["xmodal.indexer.decode_pool", "xmodal.indexer.images", "torch", "PIL.Image"]
    )
    return "forkserver"


def _recorded_model(index_dir: Path | None, db_url: str | None) -> str | None:
    """The model an existing index was built with (None for a new index: the default)."""
    from xmodal.indexer.errors import IndexNotFoundError
    from xmodal.indexer.store.index_store import IndexStore

    try:
        store = IndexStore.open(index_dir, db_url)
    except IndexNotFoundError:
        return None
    try:
        return store.model_spec
    finally:
        store.close()


def watch(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Folders to watch (default: the folders the index already covers).")
    ] = None,
    index_dir: IndexOpt = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model spec for a new index (default: the index's, else xmodal-lite)."),
    ] = None,
    db_url: DbUrlOpt = None,
    debounce: Annotated[
        float, typer.Option("--debounce", min=0.0, help="Seconds of quiet before a batch of changes is indexed.")
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON summary per index run on stdout.")] = False,
) -> None:
    """Watch folders and index what changes under them, with the model loaded once (Ctrl-C stops)."""
    from xmodal.indexer.errors import InvalidQueryError
    from xmodal.indexer.indexing import Indexer
    from xmodal.indexer.models.embedding import load_model
    from xmodal.indexer.store.index_store import IndexStore
    from xmodal.indexer.watching import indexed_roots

    roots = [os.path.abspath(p.expanduser()) for p in (paths or [])]
    if not roots:
        store = IndexStore.open(index_dir, db_url)
        try:
            roots = indexed_roots(store.metadata)  # the folders the user indexed: new subfolders too
        finally:
            store.close()
        if not roots:
            raise InvalidQueryError(
                "the index has no photos yet, so no folders to watch; give them: xmodal watch FOLDER"
            )
    missing = [r for r in roots if not os.path.isdir(r)]
    if missing and paths:
        raise InvalidQueryError(f"not a folder: {missing[0]}")
    if missing:  # an offline root of the index (an unmounted drive): rows kept, watched once it is back
        typer.echo(f"xmodal: warning: offline, watched once it is back: {', '.join(missing)}", err=True)
    # The model is loaded once, here, and every run after this reuses it.
    loaded = load_model(model or _recorded_model(index_dir, db_url))
    indexer = Indexer(index_dir, model=loaded, db_url=db_url, start_method=decode_start_method())
    watcher = start_watcher(indexer, roots, debounce=debounce, as_json=as_json, catch_up="now")
    if not as_json:
        typer.echo(f"xmodal: watching {', '.join(roots)} (Ctrl-C stops)", err=True)
    stop = threading.Event()
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
    if not as_json:
        typer.echo("xmodal: stopped watching", err=True)

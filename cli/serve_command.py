"""`xmodal serve`: the JSON API and the web gallery on uvicorn; `--watch` keeps the index current.

Registered in cli.app with ``app.command("serve")(_run(serve))``. Exit status: 0 after a clean stop,
2 when asked to listen beyond this machine without a token (or a bad option), 4 no index, 1 when
the address cannot be bound.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from xmodal.cli.options import DbUrlOpt, IndexOpt

__all__ = ["serve", "TOKEN_ENV_VAR"]

TOKEN_ENV_VAR = "XMODAL_TOKEN"


def _fail(message: str, code: int) -> None:
    typer.echo(f"xmodal: error: {message}", err=True)
    raise typer.Exit(code)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is one clear line (and --port 0 works)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off only on sockets whose proto says TCP, and with
    # Nagle on, a response's body waits ~40 ms for the client's delayed ACK of its headers.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        _fail(f"cannot listen on {host}:{port}: {e.strerror or e}", 1)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _graceful_server_class() -> type:
    """uvicorn's Server, but a Ctrl-C or SIGTERM that stopped it gracefully ends the command with
    status 0 (uvicorn re-raises the signal after shutdown, which would skip the watcher's stop)."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    return GracefulServer


def serve(
    index_dir: IndexOpt = None,
    db_url: DbUrlOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; anything but loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port, printed at start).")
    ] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=TOKEN_ENV_VAR,
            help=f"Access token (or ${TOKEN_ENV_VAR}); required on every route but /api/health.",
        ),
    ] = None,
    allow_index: Annotated[
        bool, typer.Option("--allow-index", help="Allow POST /api/index to index folders under the index's folders.")
    ] = False,
    cors: Annotated[
        list[str] | None,
        typer.Option("--cors", help="Allow this browser origin to call the API (repeatable); off by default."),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep the index current as files change under its folders (and --root).")
    ] = False,
    root: Annotated[
        list[Path] | None,
        typer.Option("--root", help="A folder to watch / allow indexing under, besides the index's own (repeatable)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="Searches run at once (default: the number of cores).")
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="uvicorn's log level: critical, error, warning, info, debug.")
    ] = "warning",
) -> None:
    """Serve an index over HTTP: a JSON API (docs at /docs) and a web gallery at /."""
    from xmodal.cli.server.settings import ServerSettings, is_loopback

    if token is not None and not token.strip():
        _fail(f"the token is empty; give a real one with --token or ${TOKEN_ENV_VAR}", 2)
    if not is_loopback(host) and not token:
        _fail(
            f"refusing to listen on {host} without a token: pass --token TOKEN or set ${TOKEN_ENV_VAR} "
            "(or use --host 127.0.0.1)",
            2,
        )
    if log_level not in ("critical", "error", "warning", "info", "debug"):
        _fail(f"--log-level must be one of critical, error, warning, info, debug, not '{log_level}'", 2)

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        _fail(
            "the server needs its extra: pip install 'xmodal[serve]' (FastAPI, uvicorn, python-multipart, watchdog)", 2
        )

    from xmodal.cli.server.app import create_app
    from xmodal.cli.watch_command import decode_start_method
    from xmodal.indexer.indexing import Indexer
    from xmodal.indexer.store.index_store import IndexStore
    from xmodal.search.engine import SearchEngine

    engine = SearchEngine.open(index_dir, db_url=db_url)
    directory = engine.store.directory
    settings = ServerSettings(
        token=token,
        allow_index=allow_index,
        cors_origins=tuple(cors or ()),
        roots=tuple(Path(os.path.abspath(r.expanduser())) for r in (root or ())),
        loopback_only=is_loopback(host),
        search_threads=threads or max(1, os.cpu_count() or 1),
    )
    # The watcher and HTTP runs each have an Indexer (each its own progress), sharing one model: with
    # --watch it is loaded now, so the first photo that appears is indexed in a second, not after a
    # model load. The two never write at once: the index's write lock queues an HTTP run meanwhile.
    model = None
    if watch:
        from xmodal.indexer.models.embedding import load_model

        print("xmodal: loading the model for --watch …", file=sys.stderr, flush=True)
        model = load_model(engine.store.model_spec)
    http_indexer = None
    if allow_index:
        http_indexer = Indexer(directory, model=model, db_url=db_url, start_method=decode_start_method())
    app = create_app(
        engine, settings, reopen=lambda: IndexStore.open(directory, db_url), indexer=http_indexer, close_engine=True
    )
    watcher = None
    if watch:
        from xmodal.cli.watch_command import start_watcher

        roots = app.state.xmodal.roots()
        if not roots:
            engine.close()
            _fail("nothing to watch: the index has no photos yet; give folders with --root", 2)
        watch_indexer = Indexer(directory, model=model, db_url=db_url, start_method=decode_start_method())
        watcher = start_watcher(watch_indexer, roots, on_change=app.state.xmodal.live.refresh)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        app,
        log_level=log_level,
        server_header=False,
        timeout_keep_alive=10,
        proxy_headers=False,
        access_log=log_level in ("info", "debug"),
        # A 100 KB query string reaches the app and gets its JSON 422, not a bare 400 from the parser.
        h11_max_incomplete_event_size=256 * 1024,
    )
    server = _graceful_server_class()(config)
    print(
        f"xmodal: serving {directory} at http://{shown}:{bound_port}/ (API docs at /docs)"
        + (" — watching its folders" if watcher else ""),
        file=sys.stderr,
        flush=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        if watcher is not None:
            watcher.stop()
        sock.close()
    print("xmodal: stopped serving", file=sys.stderr, flush=True)

"""Helpers of the server tests: a small photo library indexed with the fake encoder, the app around
it, and a real uvicorn server in a thread for the browser tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from xmodal.cli.server import ServerSettings, create_app
from xmodal.indexer.indexing import Indexer
from xmodal.indexer.store.index_store import IndexStore
from xmodal.search.engine import SearchEngine

XSS_NAME = "<img src=x onerror=alert(1)>.jpg"


@dataclass
class Library:
    photos: Path
    index: Path
    cache: Path

    def ids(self) -> dict[str, int]:
        """Photo file name -> item id."""
        store = IndexStore.open(self.index)
        try:
            return {Path(r.path).name: r.id for r in store.metadata.image_rows_under([])}
        finally:
            store.close()


def build_library(root: Path, extra: int = 0) -> Library:
    """red/green/blue/yellow photos, a rotated JPEG, a file with a hostile name, and `extra`
    greyish photos (for a page of 60 thumbnails)."""
    photos = root / "photos"
    make_image(photos / "red.jpg", COLOURS["red"], size=(120, 80))
    make_image(photos / "sub" / "green.png", COLOURS["green"], size=(64, 48))
    make_image(photos / "sub" / "blue.png", COLOURS["blue"], size=(200, 150))
    make_image(photos / "yellow.jpg", COLOURS["yellow"], size=(64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    exif.get_ifd(0x8769)[36867] = "2020:01:02 03:04:05"
    make_image(photos / "rotated.jpg", (120, 120, 200), size=(90, 60), exif=exif.tobytes())
    make_image(photos / XSS_NAME, (200, 60, 60), size=(40, 40))
    for i in range(extra):
        shade = 90 + (i * 37) % 80
        make_image(photos / "many" / f"grey{i:02d}.png", (shade, shade + (i % 7), shade - (i % 5)), size=(48, 48))
    (photos / "notes.txt").write_text("not a photo")
    index = root / "index"
    Indexer(index, model=fake_model(), workers=1).add_paths([photos])
    return Library(photos, index, root / "cache")


def make_app(library: Library, **settings: object):  # noqa: ANN201 - FastAPI
    engine = SearchEngine(IndexStore.open(library.index), model=fake_model())
    options = {"thumbnail_dir": library.cache / "thumbnails", "refresh_interval": 0.0, **settings}
    indexer = Indexer(library.index, model=fake_model(), workers=1)
    return create_app(engine, ServerSettings(**options), indexer=indexer, close_engine=True)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(app) -> Iterator[str]:  # noqa: ANN001
    """A real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)

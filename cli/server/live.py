"""One search engine kept current while other processes (an `xmodal index` run, a watcher) write.

The index store catches up by itself: every search reads the kind's generation and applies the
rows written and deleted since to the FAISS index it holds, in place (indexer.store.index_store).
This class only moves that work off the requests: at most every `interval` seconds a background
thread asks the store to catch up, so a search rarely finds changes left to apply. Nothing is
reopened per write and nothing is kept for later: the engine, its model and its store stay.

Only a change of the index's model (the folder was made again with another one) needs another
engine: it is opened beside the old one, swapped in, and the old one is closed at the next such
swap or at shutdown, so at most one retired engine is ever alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from xmodal.indexer.store.index_store import IndexStore
from xmodal.search.engine import SearchEngine

__all__ = ["LiveEngine"]


class LiveEngine:
    """Hands out the engine; `get()` also has the index follow writes by other processes."""

    def __init__(
        self, engine: SearchEngine, reopen: Callable[[], IndexStore] | None = None, interval: float = 1.0
    ) -> None:
        """reopen: opens the index again, for an engine of a new model (default: the same folder)."""
        self._engine = engine
        directory = engine.store.directory
        self._reopen = reopen or (lambda: IndexStore.open(directory))
        self.interval = interval
        self._lock = threading.Lock()  # one catch-up at a time
        self._checked = time.monotonic()
        self._following = False
        self._retired: SearchEngine | None = None
        self._new_engines = 0  # engines opened for a new model, plus the retired stores' catch-ups
        self.last_error: str | None = None

    @property
    def engine(self) -> SearchEngine:
        return self._engine

    @property
    def swaps(self) -> int:
        """Times the index was seen to change (a catch-up, or a new model): a key for what the
        server derives from the index (its roots)."""
        return self._new_engines + self._engine.store.catch_ups

    @property
    def retired(self) -> int:
        """Engines swapped out and still open (0 or 1)."""
        return int(self._retired is not None)

    @property
    def full_loads(self) -> int:
        """Caches the current engine's store read whole (once per kind, unless catch-up was impossible)."""
        return self._engine.store.full_loads

    def get(self) -> SearchEngine:
        now = time.monotonic()
        if now - self._checked >= self.interval and not self._following:
            with self._lock:
                if now - self._checked >= self.interval and not self._following:
                    self._checked = now
                    self._following = True
                    threading.Thread(target=self._follow, name="xmodal-catch-up", daemon=True).start()
        return self._engine

    def refresh(self) -> None:
        """Catch up now (blocking); after an index run of this server, and in tests."""
        with self._lock:
            self._checked = time.monotonic()
            self._catch_up()

    def close(self) -> None:
        with self._lock:
            if self._retired is not None:
                self._retired.close()
                self._retired = None
            self._engine.close()

    def _follow(self) -> None:
        try:
            with self._lock:
                self._catch_up()
        finally:
            self._following = False

    def _catch_up(self) -> None:
        """Under self._lock."""
        engine = self._engine
        try:
            before = engine.store.model_spec
            engine.store.catch_up()
            after = engine.store.model_spec
            if before is not None and after is not None and after != before:
                self._swap_engine()
            self.last_error = None
        except Exception as e:  # noqa: BLE001 - a busy or vanished database: keep serving what we have
            self.last_error = f"{type(e).__name__}: {e}"

    def _swap_engine(self) -> None:
        """A new engine for the index's new model; the previous retired one is closed now."""
        fresh = SearchEngine(self._reopen())
        old, self._engine = self._engine, fresh
        if self._retired is not None:
            self._retired.close()
        self._retired = old
        self._new_engines += old.store.catch_ups + 1

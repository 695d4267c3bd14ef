"""One search engine kept current while other processes (an `xmodal index` run, a watcher) write.

A `SearchEngine` reads its FAISS caches once. The server checks the index's generation counters (one
small SQL read, at most every `interval` seconds) and, when a writer has moved them on, opens the
index again in a background thread, loads its vectors, and only then swaps it in: requests never
wait for the reload and never see a half-loaded index. The engine object itself (its model, the
exported query encoders, the learned fusion) is kept, so a swap costs no model load.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from xmodal.indexer.store.index_store import IndexStore
from xmodal.search.engine import SearchEngine

__all__ = ["LiveEngine"]

_RETIRE_AFTER_S = 60.0  # an old store is closed this long after its swap (requests in flight finish)


class LiveEngine:
    """Hands out the engine; `get()` also notices writes by other processes."""

    def __init__(self, engine: SearchEngine, reopen: Callable[[], IndexStore], interval: float = 1.0) -> None:
        self._engine = engine
        self._reopen = reopen
        self.interval = interval
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._generation = self._read_generation(engine.store)
        self._loading = False
        self._retired: list[tuple[float, IndexStore]] = []
        self.swaps = 0
        self.last_error: str | None = None

    @property
    def engine(self) -> SearchEngine:
        return self._engine

    def get(self) -> SearchEngine:
        now = time.monotonic()
        if now - self._checked >= self.interval:
            with self._lock:
                if now - self._checked >= self.interval and not self._loading:
                    self._checked = now
                    self._check()
        return self._engine

    def refresh(self) -> None:
        """Swap in the newest committed state now (blocking); used by tests and after an index run."""
        generation = self._read_generation(self._engine.store)
        if generation != self._generation:
            self._load(generation)

    def close(self) -> None:
        with self._lock:
            for _, store in self._retired:
                store.close()
            self._retired.clear()
        self._engine.close()

    @staticmethod
    def _read_generation(store: IndexStore) -> tuple[str | None, ...]:
        meta = store.metadata.get_meta()
        return (meta.get("model"), meta.get("generation:image"), meta.get("generation:text"))

    def _check(self) -> None:
        try:
            generation = self._read_generation(self._engine.store)
        except Exception as e:  # noqa: BLE001 - a busy or vanished database: keep serving what we have
            self.last_error = f"{type(e).__name__}: {e}"
            return
        if generation != self._generation:
            self._loading = True
            threading.Thread(target=self._load, args=(generation,), name="xmodal-reload", daemon=True).start()

    def _load(self, generation: tuple[str | None, ...]) -> None:
        try:
            store = self._reopen()
            generation = self._read_generation(store)  # what this store holds (it may be newer still)
            if store.dim:
                store.vectors("image")  # loaded (or rebuilt from SQL) before any request sees it
                store.vectors("text")
            with self._lock:
                old = self._engine.store
                # The engine keeps its model and encoders; only its view of the index changes.
                self._engine.store = store
                self._generation = generation
                now = time.monotonic()
                self._retired.append((now, old))
                keep = []
                for when, retired in self._retired:
                    if now - when > _RETIRE_AFTER_S:
                        retired.close()
                    else:
                        keep.append((when, retired))
                self._retired = keep
                self.swaps += 1
                self.last_error = None
        except Exception as e:  # noqa: BLE001 - the next check tries again
            self.last_error = f"{type(e).__name__}: {e}"
        finally:
            self._loading = False

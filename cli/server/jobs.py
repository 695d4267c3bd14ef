"""Indexing runs started over HTTP (`--allow-index`): one at a time, in a background thread.

A run asked for while another writer holds the index (the `--watch` watcher, an `xmodal index` in
another process) is queued, not failed: its state is "queued" until the lock is free, then
"running". The run has an `Indexer` of its own (it may share the watcher's loaded model), so the
watcher's runs never move this run's progress. The route only starts runs: whatever a run removes
is the `Indexer`'s decision (which keeps the rows of a root that went missing).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from fastapi import HTTPException

from xmodal.indexer.errors import IndexLockedError
from xmodal.indexer.indexing import Indexer, IndexSummary, Progress
from xmodal.indexer.watching import minimal_folders

__all__ = ["IndexJobs", "inside_roots"]


def inside_roots(path: str, roots: Sequence[str]) -> bool:
    """True when path lies in one of the roots, both as written and with symlinks resolved
    (a link inside a root that points out of it does not count)."""
    absolute = os.path.abspath(path)
    real = os.path.realpath(absolute)
    for root in roots:
        root_abs = os.path.abspath(root)
        root_real = os.path.realpath(root_abs)
        lexical = absolute == root_abs or absolute.startswith(root_abs.rstrip(os.sep) + os.sep)
        resolved = real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)
        if lexical and resolved:
            return True
    return False


class IndexJobs:
    """The state of the one indexing run the server may have going, shared by its requests."""

    def __init__(
        self, indexer: Indexer, on_finished: Callable[[], None] | None = None, retry_seconds: float = 1.0
    ) -> None:
        """indexer: this server's own for HTTP runs (not the watcher's: each reports its own progress);
        retry_seconds: how often a queued run tries the index's write lock again."""
        self.indexer = indexer
        self.indexer.on_progress = self._progress
        self._on_finished = on_finished
        self.retry_seconds = retry_seconds
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.state = "idle"
        self.paths: list[str] = []
        self.done = 0
        self.total = 0
        self.summary: dict[str, object] | None = None
        self.error: str | None = None

    def status(self) -> dict[str, object]:
        with self._lock:
            return {
                "state": self.state,
                "paths": list(self.paths),
                "done": self.done,
                "total": self.total,
                "summary": self.summary,
                "error": self.error,
            }

    def start(self, requested: Sequence[str], roots: Sequence[str]) -> dict[str, object]:
        """Start a run over requested paths (all roots when empty); 409 while one runs, 422 outside the roots."""
        if not roots:
            raise HTTPException(422, "the index has no folders yet; index some photos with `xmodal index PATH` first")
        for path in requested:
            if "\0" in path or not os.path.isabs(path):
                raise HTTPException(422, f"paths must be absolute: {path!r}")
            if not inside_roots(path, roots):
                raise HTTPException(422, f"{path!r} is not under the index's folders ({', '.join(roots)})")
        paths = minimal_folders(os.path.abspath(p) for p in requested) if requested else list(roots)
        with self._lock:
            if self.state in ("queued", "running"):
                raise HTTPException(409, "an indexing run is already asked for; poll GET /api/index for its progress")
            self.state, self.paths, self.done, self.total, self.summary, self.error = "running", paths, 0, 0, None, None
            self._thread = threading.Thread(target=self._run, args=(paths,), name="xmodal-index-job", daemon=True)
            self._thread.start()
        return self.status()

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """A queued run is dropped; a running one finishes (it is never cut mid-transaction)."""
        self._stopping.set()
        self.wait(timeout)

    def _progress(self, event: Progress) -> None:
        if event.stage != "index":  # a one-time preparation after the run: not photos
            return
        with self._lock:
            self.done, self.total = event.done, event.total

    def _add_when_free(self, paths: list[str]) -> IndexSummary:
        while True:
            with self._lock:
                self.state = "running"  # an attempt takes the write lock at once, or fails at once
            try:
                return self.indexer.add_paths([Path(p) for p in paths])
            except IndexLockedError:
                with self._lock:
                    self.state = "queued"
                if self._stopping.wait(self.retry_seconds):
                    raise

    def _run(self, paths: list[str]) -> None:
        try:
            summary = self._add_when_free(paths)
        except Exception as e:  # noqa: BLE001 - reported through the status, never a crash
            with self._lock:
                self.state, self.error = "failed", str(e) or type(e).__name__
        else:
            with self._lock:
                self.state, self.summary = "done", summary.as_dict()
        finally:
            if self._on_finished is not None:
                self._on_finished()

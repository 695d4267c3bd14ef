"""Keeping an index current while files appear, change, move or vanish under its folders.

A `FolderWatcher` listens to the file system (the `watchdog` package: inotify on Linux, FSEvents on
macOS, ReadDirectoryChangesW on Windows), gathers the folders where something happened, waits until
the events settle (debounce) and then runs the ordinary incremental index run over just those folders,
with the same `Indexer` every time, so the model is loaded once and stays loaded. Each run is the
same run as `xmodal index` (one SQL transaction per batch), so it is exactly as crash-safe: a killed
watcher loses at most the batch in flight and the next run picks the rest up.

Why folders and not files: an index run removes the rows of files that are gone only below the
roots it is given, and recognises a move only when the old and the new place are in the same run.
Rescanning a folder costs one stat per file; unchanged files are skipped by size and mtime.
A watcher deletes nothing itself: its runs are ordinary runs, so an emptied or unmounted root is
offline (its rows kept) and a run missing more than `Limits.max_missing_share` removes nothing.

Library only: no printing. Runs and errors are reported through callbacks.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from xmodal.indexer.errors import IndexLockedError
from xmodal.indexer.indexing import Indexer, IndexSummary
from xmodal.indexer.kinds import NOT_MEDIA_EXTENSIONS
from xmodal.indexer.roots import folders_of, indexed_roots, looks_offline, minimal_folders

if TYPE_CHECKING:
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers.api import BaseObserver, ObservedWatch

__all__ = ["WatchRun", "FolderWatcher", "CatchUp", "index_roots", "indexed_roots", "minimal_folders"]

CatchUp = Literal["now", "background", "skip"]


@dataclass(frozen=True)
class WatchRun:
    """One index run the watcher made: the folders it rescanned and what the run did."""

    folders: tuple[str, ...]
    summary: IndexSummary
    started: float = field(default_factory=time.time)


def index_roots(image_paths: Iterable[str]) -> list[str]:
    """The folders holding these photos, reduced to the outermost (indexer.roots.folders_of).

    Prefer `indexer.roots.indexed_roots(metadata)`: the folders the user indexed, as recorded, so a
    new subfolder of an indexed root is watched too; this is its fallback for older indexes.
    """
    return folders_of(image_paths)


def _is_hidden(path: str, root: str) -> bool:
    relative = os.path.relpath(path, root)
    return any(part.startswith(".") for part in Path(relative).parts if part not in (".", ".."))


class FolderWatcher:
    """Watches folders and indexes what changes under them, debounced and batched.

    debounce: seconds without a new event before a run starts (a copy of 500 photos is one run);
    max_delay: a run starts at the latest this long after the first pending event, even while
    events keep coming; retry: seconds to wait when another process holds the index's write lock;
    offline_poll: seconds between looks at an offline root (not there or empty: an unmounted drive),
    which is watched and caught up with once it is back (a watch on an empty mount point would not
    see the drive mounted over it).
    """

    def __init__(
        self,
        indexer: Indexer,
        roots: Sequence[Path | str],
        *,
        debounce: float = 1.0,
        max_delay: float = 10.0,
        retry: float = 5.0,
        on_run: Callable[[WatchRun], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        offline_poll: float = 5.0,
    ) -> None:
        if not roots:
            raise ValueError("a watcher needs at least one folder to watch")
        self.indexer = indexer
        self.roots = minimal_folders(os.path.abspath(Path(os.fsdecode(r)).expanduser()) for r in roots)
        self.debounce = debounce
        self.max_delay = max_delay
        self.retry = retry
        self.on_run = on_run
        self.on_error = on_error
        self.offline_poll = offline_poll
        self.runs = 0
        self._watches: dict[str, ObservedWatch] = {}  # the roots listened to; the others are offline
        self._handler: FileSystemEventHandler | None = None
        self._next_poll = 0.0
        self._pending: set[str] = set()
        self._first_event = 0.0
        self._last_event = 0.0
        self._cond = threading.Condition()
        self._stopping = False
        self._observer: BaseObserver | None = None  # while started
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self, catch_up: CatchUp = "now") -> IndexSummary | None:
        """Start listening. First the folders are brought up to date with what changed while nobody
        watched: "now" runs that in the caller's thread (its errors reach the caller, its summary is
        returned), "background" leaves it to the watcher's thread, "skip" does not. The file system is
        listened to before the catch-up starts, so nothing that happens meanwhile is missed."""
        from watchdog.observers import Observer

        observer = Observer()
        self._handler = _handler(self)
        observer.daemon = True
        observer.start()
        self._observer = observer
        for root in self.roots:
            self._listen(root)
        summary = None
        if catch_up == "now":
            try:
                summary = self.indexer.add_paths(self.roots)
            except BaseException:
                self.stop()
                raise
        elif catch_up == "background":
            self.notify(*self.roots)
            with self._cond:
                self._first_event = self._last_event = 0.0  # run at once, no debounce
        self._thread = threading.Thread(target=self._loop, name="xmodal-watcher", daemon=True)
        self._thread.start()
        return summary

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop listening; a run in progress finishes its batch first (it is never cut mid-transaction)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> FolderWatcher:
        self.start("background")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def offline(self) -> list[str]:
        """The roots not listened to now: not there or empty; looked at every offline_poll seconds."""
        return [r for r in self.roots if r not in self._watches]

    def _listen(self, root: str) -> bool:
        """Listen under root if it is online; True when it is listened to."""
        if root in self._watches:
            return True
        if self._observer is None or looks_offline(root):
            return False
        try:
            self._watches[root] = self._observer.schedule(self._handler, root, recursive=True)  # type: ignore[arg-type]
        except OSError:  # gone again between the look and the watch
            return False
        return True

    def _forget(self, root: str) -> None:
        watch = self._watches.pop(root, None)
        if watch is not None and self._observer is not None:
            try:
                self._observer.unschedule(watch)
            except Exception:  # noqa: BLE001 - a watch on an unmounted drive may be gone already
                pass

    def _look_at_offline_roots(self) -> None:
        """Listen to offline roots that came back (a drive mounted again) and catch up with them."""
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + self.offline_poll
        back = [root for root in self.offline if self._listen(root)]
        if back:
            self.notify(*back)

    @property
    def pending(self) -> list[str]:
        with self._cond:
            return sorted(self._pending)

    # --- events -----------------------------------------------------------------------------
    def notify(self, *paths: str, directory: bool = True) -> None:
        """Record that something happened at these paths: folders, or with directory=False files
        (present or gone; only photo file names count)."""
        folders = [f for f in (self._folder_for(p, directory) for p in paths) if f is not None]
        if not folders:
            return
        now = time.monotonic()
        with self._cond:
            if not self._pending:
                self._first_event = now
            self._pending.update(folders)
            self._last_event = now
            self._cond.notify_all()

    def _folder_for(self, path: str, directory: bool) -> str | None:
        """The folder to rescan for an event at path: its parent, kept inside a watched root."""
        path = os.path.abspath(path)
        for root in self.roots:
            if path == root:
                return root
            if path.startswith(root.rstrip(os.sep) + os.sep):
                if _is_hidden(path, root):
                    return None  # hidden files and folders are never indexed
                if not directory and os.path.splitext(path)[1].lower() in NOT_MEDIA_EXTENSIONS:
                    return None  # plainly not media (a .txt, a sidecar): nothing to index; the rest by content
                return os.path.dirname(path)
        return None

    # --- the worker -------------------------------------------------------------------------
    def _due(self) -> float:
        """Seconds until the pending folders should be indexed (0: now)."""
        now = time.monotonic()
        return max(0.0, min(self._last_event + self.debounce, self._first_event + self.max_delay) - now)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._pending or self._due() > 0):
                    timeout = self._due() if self._pending else None
                    if self.offline:
                        timeout = min(timeout if timeout is not None else self.offline_poll, self.offline_poll)
                    self._cond.wait(timeout=timeout)
                    if self.offline and not self._stopping:
                        self._look_at_offline_roots()
                if self._stopping:
                    return
                folders = minimal_folders(self._pending)
                self._pending.clear()
            self._run(folders)

    def run_now(self) -> WatchRun | None:
        """Index the pending folders at once (for tests and for a clean shutdown)."""
        with self._cond:
            folders = minimal_folders(self._pending)
            self._pending.clear()
        return self._run(folders) if folders else None

    def _run(self, folders: list[str]) -> WatchRun | None:
        try:
            summary = self.indexer.add_paths(folders)
        except IndexLockedError as e:
            self._report_error(e)
            with self._cond:  # another writer: try the same folders again a little later
                self._pending.update(folders)
                self._first_event = self._last_event = time.monotonic() + self.retry - self.debounce
            return None
        except Exception as e:  # noqa: BLE001 - one failed run must not end the watcher
            self._report_error(e)
            return None
        for root in summary.offline_roots:  # unmounted while listened to: look for its return instead
            if root in self._watches:
                self._forget(root)
                with self._cond:
                    self._cond.notify_all()
        run = WatchRun(tuple(folders), summary)
        self.runs += 1
        if self.on_run is not None:
            self.on_run(run)
        return run

    def _report_error(self, error: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(error)


def _handler(watcher: FolderWatcher) -> FileSystemEventHandler:
    """A watchdog event handler forwarding every path an event names (watchdog is imported only
    when a watcher starts: it is the `serve` extra's)."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def dispatch(self, event: FileSystemEvent) -> None:
            kind = event.event_type
            if kind in ("opened", "closed_no_write", "attrib"):
                return  # reading a photo (e.g. the server making a thumbnail) changes nothing
            if kind == "modified" and event.is_directory:
                return  # a folder's own mtime: the events of the files inside it say what changed
            paths = [os.fsdecode(event.src_path)]
            if event.dest_path:
                paths.append(os.fsdecode(event.dest_path))
            watcher.notify(*(p for p in paths if p), directory=event.is_directory)

    return Handler()

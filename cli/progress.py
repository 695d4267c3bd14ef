"""A progress bar with rate and ETA on a terminal; silent when output is piped."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from xmodal.indexer.progress import Progress as RunProgress


class ProgressBar:
    def __init__(self, label: str, enabled: bool = True) -> None:
        self._enabled = enabled and sys.stderr.isatty()
        self._label = label
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._stage = "index"

    def __enter__(self) -> ProgressBar:
        if self._enabled:
            from rich.console import Console

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=None, rate="")
        return self

    def update(self, event: RunProgress) -> None:
        """One bar per stage: the photos ("index"), then each one-time preparation by its name."""
        if self._progress is None:
            return
        stage = getattr(event, "stage", "index")
        if stage != self._stage or self._task is None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._stage = stage
            self._task = self._progress.add_task(self._label if stage == "index" else stage, total=None, rate="")
        task = next(t for t in self._progress.tasks if t.id == self._task)
        rate = f"{task.speed:.1f} img/s" if task.speed and stage == "index" else ""
        self._progress.update(self._task, total=event.total, completed=event.done, rate=rate)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

"""A progress bar with rate and ETA on a terminal; silent when output is piped."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from xmodal.indexer.indexing import Progress as RunProgress


class ProgressBar:
    def __init__(self, label: str, enabled: bool = True) -> None:
        self._enabled = enabled and sys.stderr.isatty()
        self._label = label
        self._progress: Progress | None = None
        self._task: int | None = None

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
        if self._progress is None or self._task is None:
            return
        task = self._progress.tasks[0]
        rate = f"{task.speed:.1f} img/s" if task.speed else ""
        self._progress.update(self._task, total=event.total, completed=event.done, rate=rate)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

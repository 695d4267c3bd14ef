"""A lock that lets many searches read one FAISS index at once and a change apply alone.

A reader that catches up in place (indexer.store.index_store) changes the very index its searches
read: the change waits for the searches in flight and holds new ones back until it is applied, so
no search sees half of it and no copy of the index is made. Waiting writers go first (a steady
stream of searches cannot starve a catch-up), and the thread holding the write side may enter
either side again (an add that grows the index past its plan rebuilds it inside the same change).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ReadWriteLock"]


class ReadWriteLock:
    """Shared (`reading`) or exclusive (`writing`) access; re-entrant for the writer only."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None  # thread id of the writer
        self._depth = 0  # the writer's nested entries
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._condition:
            nested = self._writer == me
            if nested:
                self._depth += 1
            else:
                while self._writer is not None or self._writers_waiting:
                    self._condition.wait()
                self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                if nested:
                    self._depth -= 1
                else:
                    self._readers -= 1
                    if self._readers == 0:
                        self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._condition:
            if self._writer == me:
                self._depth += 1
            else:
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._condition.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._condition:
                self._depth -= 1
                if self._depth == 0:
                    self._writer = None
                    self._condition.notify_all()

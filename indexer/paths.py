"""Paths as the index stores them, on every operating system.

Stored paths are absolute and spelled by the platform (`C:\\Photos\\a.jpg` on Windows,
`/photos/a.jpg` elsewhere), so "everything under a folder" must use the platform's separator and
never assume "/". These are pure functions of their inputs (the flavour can be given), so the
Windows rules are tested on any machine.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath, PureWindowsPath

__all__ = ["folder_prefixes", "absolute", "OPEN_NONBLOCK"]

# Opening a FIFO must not block (POSIX); Windows has no FIFOs in the file system and no flag.
OPEN_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def absolute(path: str | os.PathLike[str]) -> Path:
    """`~` expanded, made absolute and normalised ("a/../b" -> "b") without resolving symlinks,
    which is how the index names a file it was given."""
    return Path(os.path.abspath(Path(os.fsdecode(path)).expanduser()))


def folder_prefixes(folder: str | os.PathLike[str], flavour: type[PurePath] | None = None) -> tuple[str, str]:
    """(the folder as stored, the start of every stored path inside it) for an absolute folder.

    >>> folder_prefixes("C:/Users/me/Pictures/", PureWindowsPath)
    ('C:\\\\Users\\\\me\\\\Pictures', 'C:\\\\Users\\\\me\\\\Pictures\\\\')
    A root keeps its one separator: "/" -> ("/", "/"), "D:\\" -> ("D:\\", "D:\\").
    """
    kind = flavour or type(PurePath())
    pure = kind(os.fspath(folder))
    spelled = str(pure)
    separator = "\\" if issubclass(kind, PureWindowsPath) else "/"
    if spelled.endswith(separator):  # a root ("/", "C:\\")
        return spelled, spelled
    return spelled, spelled + separator

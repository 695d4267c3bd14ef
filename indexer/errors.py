"""Domain errors of xmodal. The CLI maps each to a one-line message and an exit code."""

from __future__ import annotations

__all__ = [
    "XmodalError",
    "ModelLoadError",
    "MissingExtraError",
    "IndexNotFoundError",
    "IndexLockedError",
    "ModelMismatchError",
    "InvalidQueryError",
    "InvalidInputError",
    "ImageReadError",
    "ClusterError",
]


class XmodalError(Exception):
    """Base class: every error a user can act on."""

    exit_code = 1


class ModelLoadError(XmodalError):
    """A model spec could not be turned into a model (unknown name, no network, bad checkpoint)."""

    exit_code = 3


class MissingExtraError(ModelLoadError):
    """What was asked needs an optional part of xmodal (an extra) that is not installed."""

    def __init__(self, who_needs: str, extra: str) -> None:
        """who_needs: the subject and its verb, e.g. "OpenCLIP models need"."""
        super().__init__(f"{who_needs} the {extra} extra: pip install 'xmodal[{extra}]'")
        self.extra = extra


class IndexNotFoundError(XmodalError):
    """The index directory holds no xmodal index, or one this version cannot read."""

    exit_code = 4


class ModelMismatchError(XmodalError):
    """The index was built with another model than the one asked for."""

    exit_code = 5


class IndexLockedError(XmodalError):
    """Another process is writing to the index."""

    exit_code = 6


class InvalidQueryError(XmodalError):
    """A query that cannot be run (empty text, unreadable query image, bad filter)."""

    exit_code = 2


class InvalidInputError(XmodalError):
    """Input files (pairs, text corpora) that cannot be read."""

    exit_code = 2


class ImageReadError(XmodalError):
    """One image file could not be decoded; recorded as a failure, never fatal to a run."""


class ClusterError(XmodalError):
    """Ray is missing, its cluster cannot be reached, or it gave up on the run (`--ray`)."""

    exit_code = 7

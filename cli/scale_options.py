"""`xmodal index --ray [ADDRESS] --from-list FILE`: turning the options into library arguments.

Kept out of cli.app so the index command grows by a few lines only.
"""

from __future__ import annotations

from pathlib import Path

from xmodal.indexer.errors import InvalidInputError

__all__ = ["LOCAL", "ray_options", "listing", "bare_ray_flag"]

LOCAL = "local"  # the value of a bare `--ray`: a local cluster started for the run


def ray_options(value: str | None, paths: list[Path], cpus: int | None = None):  # noqa: ANN201 - RayOptions | None
    """RayOptions for `--ray VALUE` (None when not given). A value that is an existing path was
    the first PATH swallowed by a bare `--ray` (`xmodal index --ray ./photos`): it goes back."""
    if value is None:
        return None
    from xmodal.indexer.distributed import RayOptions

    if value != LOCAL and value != "auto" and Path(value).exists():
        paths.insert(0, Path(value))
        value = LOCAL
    import logging

    # Ray's INFO/WARNING lines would bury the progress bar and the summary: errors only. Ray Data
    # sets up its logger when imported, so it is imported first (only when --ray is given).
    try:
        import ray.data  # noqa: F401

        logging.getLogger("ray.data").setLevel(logging.ERROR)
    except ImportError:
        pass  # the run reports the missing extra as a domain error
    return RayOptions(address=None if value == LOCAL else value, num_cpus=cpus, log_level=logging.ERROR)


def listing(path: Path | None):  # noqa: ANN201 - an iterator of FoundFile | SkippedFile, or None
    if path is None:
        return None
    from xmodal.indexer.listing import read_listing

    if not path.is_file():
        raise InvalidInputError(f"--from-list: '{path}' not found")
    return read_listing(path)


def bare_ray_flag(argv: list[str]) -> list[str]:
    """`--ray` given without a value (last, or before another option) means a local cluster; the
    bundled click needs the value spelled out, so it is filled in before parsing."""
    out = list(argv)
    for i, token in enumerate(out):
        if token == "--":
            break
        if token == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, LOCAL)
            break
    return out

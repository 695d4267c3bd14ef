"""The user cache folder, in one place: $XMODAL_CACHE, else the per-user cache (e.g. ~/.cache/xmodal).

Everything xmodal caches lives under it (ONNX exports, query banks, tower features, ConSE class
embeddings), so a test or a sandboxed run redirects all of it with one variable.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV_VAR", "cache_dir"]

CACHE_ENV_VAR = "XMODAL_CACHE"


def cache_dir() -> Path:
    """Read at each call, so a caller that changes the variable is followed."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("xmodal"))

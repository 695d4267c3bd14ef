"""Which hardware runs the models: a torch device and onnxruntime execution providers.

Resolved once, where a model is loaded ("auto" becomes a concrete choice), and passed down; nothing
below guesses again. Importing this module imports neither torch nor onnxruntime: a search process
asks for providers without paying for torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Literal

__all__ = ["Device", "resolve_device", "choose_providers", "default_threads", "onnx_providers", "PROVIDER_PREFERENCE"]

Device = Literal["auto", "cpu", "cuda", "mps"]

# Best first. TensorRT is left out on purpose: it compiles an engine per input shape on first use
# (minutes), which would stall the first query; CUDA runs the same graph at once.
PROVIDER_PREFERENCE: tuple[str, ...] = (
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
)
# The providers that run on the device torch calls by that name (same GPU for both libraries).
_FOR_DEVICE = {"cuda": ("CUDAExecutionProvider",), "mps": ("CoreMLExecutionProvider",)}


def resolve_device(device: Device | str = "auto") -> str:
    """ "auto" -> "cuda" when torch sees a CUDA GPU, else "mps" on Apple silicon, else "cpu". Without
    torch (the core install) onnxruntime decides: "cuda" when it has the CUDA provider (onnxruntime-gpu)."""
    if device != "auto":
        return device
    if _surely_no_gpu():
        return "cpu"
    from xmodal.indexer.extras import installed

    if not installed(("torch",)):
        return "cuda" if "CUDAExecutionProvider" in onnx_providers("cuda") else "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


# Device nodes that a GPU torch could use leaves on Linux: NVIDIA's, AMD's (ROCm), WSL's.
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def _surely_no_gpu() -> bool:
    """Linux without any GPU device node: "auto" is the CPU, known without importing torch (over a
    second, most of an indexing run whose image path is exported). Elsewhere torch decides."""
    return sys.platform.startswith("linux") and not any(os.path.exists(node) for node in _GPU_NODES)


def choose_providers(available: Sequence[str], device: str = "auto") -> list[str]:
    """The providers to hand to an InferenceSession, best first, always ending with the CPU.

    `device` "cpu" asks for the CPU alone; "cuda"/"mps" for that accelerator's provider when the
    installed onnxruntime has it; "auto" for the best one it has. A pure function of its inputs.
    """
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = _FOR_DEVICE.get(device, PROVIDER_PREFERENCE)
    chosen = [p for p in PROVIDER_PREFERENCE if p in available and p in wanted and p != "CPUExecutionProvider"]
    if device == "auto":
        chosen = chosen[:1]  # one accelerator: sessions never split a graph across two devices
    return [*chosen, "CPUExecutionProvider"]


def onnx_providers(device: str = "auto") -> list[str]:
    """choose_providers for the installed onnxruntime (onnxruntime-gpu brings CUDA, the macOS
    wheels CoreML, onnxruntime-directml DirectML)."""
    import onnxruntime

    return choose_providers(onnxruntime.get_available_providers(), device)


def default_threads() -> int:
    """Threads for the offline default's backbone while indexing: a third of the cores.
    Draft-decoding a photo costs about twice the model's CPU, so the decode workers need the other
    two thirds. On 2 cores that is one thread, which spends 9 ms of CPU per photo; two threads
    spend 13 ms for 1.2x the speed (measured here)."""
    return max(1, (os.cpu_count() or 1) // 3)

"""Which hardware runs the models: a torch device and onnxruntime execution providers.

Resolved once, where a model is loaded ("auto" becomes a concrete choice), and passed down; nothing
below guesses again. Importing this module imports neither torch nor onnxruntime: a search process
asks for providers without paying for torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

__all__ = ["Device", "resolve_device", "choose_providers", "onnx_providers", "PROVIDER_PREFERENCE"]

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
    """ "auto" -> "cuda" when torch sees a CUDA GPU, else "mps" on Apple silicon, else "cpu"."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


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

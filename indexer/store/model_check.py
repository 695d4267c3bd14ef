"""The one check of a model against an index: the same model, the same dimension, the same weights.

An index records its model spec, dimension and weights' fingerprint when its first vectors are
written (`IndexStore.check_model`); every later user — an indexing run, a text run, an import, a
search engine opening it, `xmodal check --model` — asks `check_model_matches` before it loads a
model or writes a vector, so vectors of two models (or two versions of one) never mix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xmodal.indexer.errors import ModelMismatchError
from xmodal.indexer.models.spec import ModelSpec, model_fingerprint, parse_model_spec

if TYPE_CHECKING:
    from xmodal.indexer.models.embedding import EmbeddingModel
    from xmodal.indexer.store.index_store import IndexStore

__all__ = ["check_model_matches"]


def check_model_matches(
    store: IndexStore,
    model: EmbeddingModel | ModelSpec | str,
    *,
    dim: int | None = None,
    fingerprint: str | None = None,
) -> None:
    """Raise ModelMismatchError when the index was built with another model than `model` (a loaded
    model, a spec, or a spec's text), another dimension, or other weights under the same name.

    An index with no model recorded yet matches anything. dim: the model's dimension (a loaded
    model gives its own). fingerprint: its weights' fingerprint; when None it is computed from the
    spec, and only if the index recorded one (a spec's text that is malformed raises here).
    """
    recorded = store.model_spec
    if not recorded:
        return
    spec: ModelSpec | None  # parsed only when needed: a recorded spec's text is compared as it is
    if isinstance(model, str):
        spec = None if model == recorded else parse_model_spec(model)
        asked = model if spec is None else str(spec)
    elif isinstance(model, ModelSpec):
        spec, asked = model, str(model)
    else:
        spec, asked, dim = model.spec, str(model.spec), model.dim
    recorded_dim = store.dim
    if asked != recorded or (dim is not None and recorded_dim is not None and dim != recorded_dim):
        shown = f"'{recorded}' (dim {recorded_dim})" if dim is not None else f"'{recorded}'"
        wanted = f"'{asked}' (dim {dim})" if dim is not None else f"'{asked}'"
        raise ModelMismatchError(
            f"index '{store.directory}' was built with model {shown}, not {wanted}; "
            f"use --model '{recorded}' or another --index"
        )
    stored = store.metadata.get_meta().get("fingerprint")
    if not stored:
        return
    if fingerprint is None:
        fingerprint = model_fingerprint(spec if spec is not None else parse_model_spec(asked))
    if fingerprint != stored:
        raise ModelMismatchError(
            f"index '{store.directory}' was built with other weights of model '{recorded}' "
            f"(a retrained head?); index into a new --index folder to use the current ones"
        )

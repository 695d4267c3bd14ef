"""What an index holds: counts, model, size, failures."""

from __future__ import annotations

from pathlib import Path

from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import FailureRow, ImageRow, TextRow


def index_info(index_dir: Path | str | None = None, db_url: str | None = None) -> dict[str, object]:
    store = IndexStore.open(index_dir, db_url)
    try:
        return {
            "index": str(store.directory),
            "images": store.metadata.count(ImageRow),
            "texts": store.metadata.count(TextRow),
            "errors": store.metadata.count(FailureRow),
            "model": store.model_spec,
            "dim": store.dim,
            "size_bytes": store.size_bytes(),
        }
    finally:
        store.close()


def failures(index_dir: Path | str | None = None, db_url: str | None = None) -> list[dict[str, str]]:
    store = IndexStore.open(index_dir, db_url)
    try:
        return [{"path": f.path, "reason": f.reason} for f in store.metadata.failures()]
    finally:
        store.close()

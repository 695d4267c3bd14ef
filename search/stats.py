"""What an index holds: counts, model, size, failures."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import func, select

from xmodal.indexer.scanning import unread_extension
from xmodal.indexer.signals import DEFAULT_SIGNALS, Signal
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.store.schema import FailureRow, ImageRow, TextRow

__all__ = ["failure_counts", "failures", "index_info", "storage_per_photo"]


def failure_counts(failures: Iterable[FailureRow]) -> tuple[int, dict[str, int]]:
    """(real errors, skips of kinds not read, by extension): a camera RAW or a video is a skip, not an error."""
    errors = 0
    skipped: dict[str, int] = {}
    for failure in failures:
        extension = unread_extension(failure.reason, failure.path)
        if extension is None:
            errors += 1
        else:
            skipped[extension] = skipped.get(extension, 0) + 1
    return errors, dict(sorted(skipped.items()))


def index_info(
    index_dir: Path | str | None = None, db_url: str | None = None, signals: Sequence[Signal] = DEFAULT_SIGNALS
) -> dict[str, object]:
    """Counts, model, size and failures of an index; `signals`: what it holds of each per-item
    signal (indexer.signals), by the signal's name."""
    store = IndexStore.open(index_dir, db_url)
    try:
        errors, skipped = failure_counts(store.metadata.failures())
        return {
            "index": str(store.directory),
            "database": store.db_url,  # password masked
            "images": store.metadata.count(ImageRow),
            "texts": store.metadata.count(TextRow),
            "errors": errors,
            "skipped": skipped,
            "model": store.model_spec,
            "dim": store.dim,
            "signals": {signal.name: signal.info(store) for signal in signals},
            "text_in_photos": _text_reading(),
            "size_bytes": store.size_bytes(),
            "bytes_per_photo": storage_per_photo(store),
        }
    finally:
        store.close()


def _text_reading() -> str:
    """Whether indexing reads the text in photos here, and with what; or why not, with the pip line."""
    from xmodal.indexer.photo_text import ocr_unavailable, shipped_models

    missing = ocr_unavailable()
    if missing is not None:
        return missing
    found = shipped_models()
    return f"read at indexing (rapidocr, {found[0].name})" if not isinstance(found, str) else found


def storage_per_photo(store: IndexStore) -> dict[str, int]:
    """What each stored part costs per photo, in bytes: the vector and the tower features (SQL
    columns), the photos' FAISS cache, the rest of the folder (rows, paths, hashes, SQL indexes,
    texts) and the folder's total divided by the photos; empty without photos. With a database
    outside the folder (PostgreSQL) the folder holds the FAISS caches only."""
    with store.metadata.session() as s:
        photos, vectors, features = s.execute(
            select(
                func.count(),
                func.coalesce(func.sum(func.length(ImageRow.vector)), 0),
                func.coalesce(func.sum(func.length(ImageRow.features)), 0),
            )
        ).one()
    if not photos:
        return {}
    files = {f.name: f.stat().st_size for f in store.directory.iterdir() if f.is_file()}
    folder = sum(files.values())
    faiss = sum(size for name, size in files.items() if name.startswith(store.faiss_path("image").name))
    parts = {"vector": vectors, "tower_features": features, "faiss_cache": faiss}
    url = store.metadata.engine.url
    if (
        url.get_backend_name() == "sqlite"
        and url.database
        and Path(url.database).resolve().parent == Path(store.directory).resolve()
    ):
        parts["other"] = max(0, folder - vectors - features - faiss)
        parts["total"] = folder
    return {name: int(round(size / photos)) for name, size in parts.items()}


def failures(index_dir: Path | str | None = None, db_url: str | None = None) -> list[dict[str, str]]:
    store = IndexStore.open(index_dir, db_url)
    try:
        return [{"path": f.path, "reason": f.reason} for f in store.metadata.failures()]
    finally:
        store.close()

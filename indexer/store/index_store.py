"""One index on disk: a directory with its settings file, the SQL metadata and the FAISS caches.

    DIR/xmodal.json      schema version and the SQLAlchemy URL (SQLite file in DIR by default)
    DIR/index.db         metadata and full-precision vectors (source of truth)
    DIR/images.faiss     image vectors (ids = images.id), a cache rebuilt from SQL when stale
    DIR/texts.faiss      text vectors (ids = texts.id)
    DIR/.lock            held by the one process that writes
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir

from xmodal.indexer.errors import IndexLockedError, IndexNotFoundError, ModelMismatchError
from xmodal.indexer.store.schema import SCHEMA_VERSION, ImageRow, MetadataStore, TextRow
from xmodal.indexer.store.vector_index import VectorIndex

__all__ = ["Kind", "INDEX_ENV_VAR", "default_index_dir", "IndexStore"]

Kind = Literal["image", "text"]
INDEX_ENV_VAR = "XMODAL_INDEX"
_SETTINGS = "xmodal.json"
_TABLES: dict[str, type[ImageRow] | type[TextRow]] = {"image": ImageRow, "text": TextRow}


def default_index_dir() -> Path:
    """$XMODAL_INDEX, else the per-user data directory (e.g. ~/.local/share/xmodal/index)."""
    env = os.environ.get(INDEX_ENV_VAR)
    return Path(env).expanduser() if env else Path(user_data_dir("xmodal")) / "index"


class IndexStore:
    """Opens the parts of one index and keeps them consistent."""

    def __init__(self, directory: Path, metadata: MetadataStore) -> None:
        self.directory = directory
        self.metadata = metadata
        self._vectors: dict[str, VectorIndex] = {}

    # --- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path | str | None = None, db_url: str | None = None, create: bool = False) -> IndexStore:
        path = Path(directory).expanduser() if directory else default_index_dir()
        settings_file = path / _SETTINGS
        if settings_file.is_file():
            try:
                settings = json.loads(settings_file.read_text())
            except (OSError, ValueError) as e:
                raise IndexNotFoundError(f"index settings '{settings_file}' are unreadable: {e}") from e
            if not isinstance(settings, dict) or settings.get("schema", 0) > SCHEMA_VERSION:
                raise IndexNotFoundError(f"'{path}' was written by a newer xmodal (schema {settings.get('schema')})")
            url = db_url or settings.get("db_url") or _sqlite_url(path)
        elif create:
            if path.exists() and not path.is_dir():
                raise IndexNotFoundError(f"index location '{path}' is a file, not a folder")
            path.mkdir(parents=True, exist_ok=True)
            url = db_url or _sqlite_url(path)
            settings = {"schema": SCHEMA_VERSION, "db_url": db_url}
            _write_json(settings_file, settings)
        else:
            hint = "" if path.exists() else " (no such folder)"
            raise IndexNotFoundError(f"no xmodal index at '{path}'{hint}; create one with `xmodal index PATH --index {path}`")
        try:
            metadata = MetadataStore.connect(url, create=True)
        except Exception as e:
            reason = (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0]  # one line
            raise IndexNotFoundError(f"cannot open the index database '{url}': {reason}") from e
        return cls(path, metadata)

    def close(self) -> None:
        self.metadata.close()

    # --- facts ------------------------------------------------------------------------------
    @property
    def model_spec(self) -> str | None:
        return self.metadata.get_meta().get("model")

    @property
    def dim(self) -> int | None:
        dim = self.metadata.get_meta().get("dim")
        return int(dim) if dim else None

    def check_model(self, spec: str, dim: int, fingerprint: str | None = None) -> None:
        """Record the model on first use; refuse to mix vectors of two models (or two versions)."""
        meta = self.metadata.get_meta()
        if "model" not in meta:
            values = {"model": spec, "dim": str(dim), "normalized": "true", "schema": str(SCHEMA_VERSION)}
            if fingerprint:
                values["fingerprint"] = fingerprint
            self.metadata.set_meta(values)
            return
        if meta["model"] != spec or int(meta["dim"]) != dim:
            raise ModelMismatchError(
                f"index '{self.directory}' was built with model '{meta['model']}' (dim {meta['dim']}), "
                f"not '{spec}' (dim {dim}); use --model '{meta['model']}' or another --index"
            )
        self.check_fingerprint(fingerprint)

    def check_fingerprint(self, fingerprint: str | None) -> None:
        recorded = self.metadata.get_meta().get("fingerprint")
        if fingerprint and recorded and recorded != fingerprint:
            raise ModelMismatchError(
                f"index '{self.directory}' was built with other weights of model '{self.model_spec}' "
                f"(a retrained head?); index into a new --index folder to use the current ones"
            )

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.directory.iterdir() if f.is_file())

    # --- vectors ----------------------------------------------------------------------------
    def faiss_path(self, kind: Kind) -> Path:
        return self.directory / f"{kind}s.faiss"

    def vectors(self, kind: Kind) -> VectorIndex:
        """The FAISS index of one kind, rebuilt from SQL when its file is missing or stale."""
        if kind in self._vectors:
            return self._vectors[kind]
        dim = self.dim or 0
        generation = int(self.metadata.get_meta().get(f"generation:{kind}", "0"))
        loaded = VectorIndex.load(self.faiss_path(kind), dim) if dim else None
        if loaded is not None and loaded[1] == generation:
            index = loaded[0]
        else:
            index = self.rebuild_vectors(kind)
        self._vectors[kind] = index
        return index

    def rebuild_vectors(self, kind: Kind) -> VectorIndex:
        index = VectorIndex(self.dim or 0)
        ids, vecs = self.metadata.vectors(_TABLES[kind])
        if len(ids):
            index.add(ids, vecs)
        self._vectors[kind] = index
        return index

    def save_vectors(self) -> None:
        """Persist the FAISS caches at the current SQL generation (writers only, under the lock)."""
        meta = self.metadata.get_meta()
        for kind, index in self._vectors.items():
            index.save(self.faiss_path(kind), int(meta.get(f"generation:{kind}", "0")))  # type: ignore[arg-type]

    def optimize(self, lean: bool = False) -> dict[str, str]:
        """Rebuild each FAISS cache with the index type its size calls for (exact up to ~16k
        vectors, then IVF with exact re-scoring; `lean` keeps compressed codes in RAM and the full
        vectors memory-mapped). Returns a description of each kind's index type."""
        from xmodal.indexer.store.vector_index import choose_plan

        described = {}
        with self.write_lock():
            for kind in ("image", "text"):
                index = self.vectors(kind)  # type: ignore[arg-type]
                index.lean = lean
                if len(index):
                    index.optimize(choose_plan(len(index), index.dim, lean))
                described[kind] = f"{len(index)} vectors, {index.plan.describe()}"
            self.save_vectors()
        return described

    # --- writers ----------------------------------------------------------------------------
    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """One writer at a time. flock is released by the kernel when a killed run's process dies."""
        lock_path = self.directory / ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexLockedError(f"another xmodal run is writing to index '{self.directory}'; try again when it ends") from None
            for leftover in self.directory.glob("*.faiss*.tmp"):  # a killed writer's half-written cache
                try:
                    leftover.unlink()
                except OSError:
                    pass
            yield
        finally:
            os.close(fd)


def _sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory.absolute() / 'index.db'}"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)

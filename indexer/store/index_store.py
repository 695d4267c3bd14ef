"""One index: a folder with its settings file and FAISS caches, and the SQL database it reads.

    DIR/xmodal.json      layout version and the SQLAlchemy URL (SQLite file in DIR by default)
    DIR/index.db         metadata and full-precision vectors (source of truth), when SQLite
    DIR/images.faiss     image vectors (ids = images.id), a local cache stamped with the database's
    DIR/texts.faiss      text vectors (ids = texts.id)   identity and generation
    DIR/frames.faiss     vectors of the frames sampled from videos (ids = frames.id)
    DIR/.cache.lock      held while a process writes the FAISS caches of this folder

SQL is the truth, FAISS a cache: several folders (machines) can share one PostgreSQL database,
each with its own caches. A cache whose stamp is behind the database catches up from the rows
written and deleted since (schema.MetadataStore.changes_since), incrementally, and is rebuilt
from SQL only when it cannot (no usable file, another database, changes from before tracking).

A long-running reader (the server, MCP, a library user) keeps one store open: each `vectors()`
reads the kind's generation (one primary-key read) and applies what other processes changed
since to the index it holds, in place (the index's own lock keeps searches whole). Nothing is
reopened or copied per change; a full load happens once per kind, and again only when the model
or the database changed or the changes cannot be told apart (`full_loads`, `last_full_load`).

One writer at a time per database: a PostgreSQL advisory lock held by the writer's connection
(the server drops it when the writer dies, on any machine), or a file lock beside the SQLite file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout
from platformdirs import user_data_dir
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from xmodal.indexer.errors import IndexLockedError, IndexNotFoundError
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits
from xmodal.indexer.store.migrations import SchemaTooNewError
from xmodal.indexer.store.schema import (
    SCHEMA_VERSION,
    FrameRow,
    ImageRow,
    MetadataStore,
    TextRow,
    VectorTable,
    is_busy,
    safe_url,
    scrub,
)
from xmodal.indexer.store.vector_index import VectorIndex

__all__ = ["Kind", "INDEX_ENV_VAR", "DB_URL_ENV_VAR", "default_index_dir", "IndexStore"]

Kind = Literal["image", "text", "frame"]  # "frame": the frames sampled from videos
INDEX_ENV_VAR = "XMODAL_INDEX"
DB_URL_ENV_VAR = "XMODAL_DB_URL"
_SETTINGS = "xmodal.json"
_TABLES: dict[str, VectorTable] = {"image": ImageRow, "text": TextRow, "frame": FrameRow}
# pg_try_advisory_lock key of the writer (any constant; advisory locks are per database)
_WRITER_LOCK_KEY = 0x786D6F64616C7772
# A reader saves its caught-up cache only when the file is this far behind (rows): saving a
# large flat index after every few new rows would cost more than catching up again.
_READER_SAVE_MIN_CHANGES = 1_000
# A rebuild from SQL reads all vectors at once up to this size (float32 bytes); above, it streams
# them within a budget instead (indexer.store.bounded_build).
_IN_MEMORY_REBUILD_BYTES = 1024**3
_log = logging.getLogger(__name__)


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
        self._generations: dict[str, int] = {}  # the generation each cached index reflects
        self._writing = False
        self._swap = threading.RLock()
        self._last_catch_up = 0  # rows the last catch-up applied
        self._model_meta: dict[str, str] | None = None  # see _model_facts
        self.full_loads = 0  # caches read whole (from their file or from SQL), not caught up
        self.catch_ups = 0  # times a held cache followed what other writers changed (in place, or reloaded)
        self.last_full_load: str | None = None  # why the latest one was needed

    # --- opening ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        directory: Path | str | None = None,
        db_url: str | None = None,
        create: bool = False,
        limits: Limits = DEFAULT_LIMITS,
    ) -> IndexStore:
        """Open the index in `directory`; the database is `db_url`, else $XMODAL_DB_URL, else the
        one recorded when the index was made (SQLite in the folder by default).

        IndexLockedError when another process holds the database longer than
        `limits.database_busy_seconds` (e.g. several opening an old index at once, one upgrading it)."""
        path = Path(directory).expanduser() if directory else default_index_dir()
        db_url = db_url or os.environ.get(DB_URL_ENV_VAR) or None
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
            _write_settings(settings_file, settings)
        elif db_url and not (path.exists() and not path.is_dir()):
            # another machine's folder for an index that lives in a shared database: made on
            # first use, once the database shows it holds an index
            url, settings = db_url, {"schema": SCHEMA_VERSION, "db_url": db_url}
            _probe_index(url, path)
            path.mkdir(parents=True, exist_ok=True)
            _write_settings(settings_file, settings)
        else:
            hint = "" if path.exists() else " (no such folder)"
            raise IndexNotFoundError(
                f"no xmodal index at '{path}'{hint}; create one with `xmodal index PATH --index {path}`"
            )
        try:
            metadata = MetadataStore.connect(url, create=True, busy_seconds=limits.database_busy_seconds)
        except SchemaTooNewError:
            raise
        except ModuleNotFoundError as e:
            hint = " (pip install 'xmodal[postgres]')" if "psycopg" in str(e) else ""
            raise IndexNotFoundError(f"cannot open the index database '{safe_url(url)}': {e}{hint}") from e
        except Exception as e:
            if is_busy(e):  # there, but held by another process: not a missing index
                raise IndexLockedError(
                    f"the index database '{safe_url(url)}' is busy: another process held it for more than "
                    f"{limits.database_busy_seconds:g} s (an upgrade or a long write); try again"
                ) from e
            reason = (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0]  # one line
            raise IndexNotFoundError(
                f"cannot open the index database '{safe_url(url)}': {scrub(reason, url)}"
            ) from None
        if settings.get("schema", 0) < SCHEMA_VERSION:  # the database was upgraded: so is the folder
            try:
                _write_settings(settings_file, {**settings, "schema": SCHEMA_VERSION})
            except OSError:
                pass  # a read-only folder still searches
        return cls(path, metadata)

    def close(self) -> None:
        self.metadata.close()

    # --- facts ------------------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        """The database's URL with its password masked (for display)."""
        return safe_url(self.metadata.engine.url)

    def _model_facts(self) -> dict[str, str]:
        """The meta rows that name the index's model. Recorded once and never changed (check_model
        refuses another model), so after that they are not read again: a search asks on every
        query, and the SQL read was about 4% of a served search's time under the GIL."""
        if self._model_meta is not None:
            return self._model_meta
        meta = self.metadata.get_meta()
        if meta.get("model") and meta.get("dim"):
            self._model_meta = meta
        return meta

    @property
    def model_spec(self) -> str | None:
        return self._model_facts().get("model")

    @property
    def dim(self) -> int | None:
        dim = self._model_facts().get("dim")
        return int(dim) if dim else None

    def check_model(self, spec: str, dim: int, fingerprint: str | None = None) -> None:
        """Record the model on first use; later, refuse another one (model_check.check_model_matches):
        vectors of two models (or two versions of one) never mix."""
        meta = self.metadata.get_meta()
        if "model" not in meta:
            values = {"model": spec, "dim": str(dim), "normalized": "true", "schema": str(SCHEMA_VERSION)}
            if fingerprint:
                values["fingerprint"] = fingerprint
            self.metadata.set_meta(values)
            return
        from xmodal.indexer.store.model_check import check_model_matches

        check_model_matches(self, spec, dim=dim, fingerprint=fingerprint)

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.directory.iterdir() if f.is_file())

    # --- vectors ----------------------------------------------------------------------------
    def faiss_path(self, kind: Kind) -> Path:
        return self.directory / f"{kind}s.faiss"

    def vectors(self, kind: Kind) -> VectorIndex:
        """The FAISS index of one kind, current with the database.

        Each call reads the kind's generation (one small query); when another process (or
        machine) wrote since, the held index applies those changes in place and is returned
        again: the same object, never a copy. While another thread is catching up, the index is
        handed out as it is: its searches wait for the change to be applied (VectorIndex's lock).
        While this store holds the write lock, its own index is current by construction.
        """
        cached = self._vectors.get(kind)
        if cached is not None and not self._swap.acquire(blocking=False):
            return cached  # another thread is bringing it up to date
        if cached is None:
            self._swap.acquire()
        try:
            return self._current(kind)
        finally:
            self._swap.release()

    def _current(self, kind: Kind) -> VectorIndex:
        cached = self._vectors.get(kind)
        if cached is not None and cached.dim == 0 and self.dim:  # made before the model was recorded
            cached = None
        if cached is not None and self._writing:
            return cached
        current = self.metadata.generation(kind)
        if cached is not None:
            since = self._generations[kind]
            if since == current:
                return cached
            self.catch_ups += 1
            if self._caught_up(kind, cached, since, current) is not None:
                self._generations[kind] = current
                return cached
            index = self._from_sql(kind, f"the {kind} cache could not catch up from generation {since} to {current}")
        else:
            index = self._open_cache(kind, current)
        self._vectors[kind], self._generations[kind] = index, current
        return index

    def held_kinds(self) -> list[str]:
        """The kinds whose FAISS cache this store holds loaded."""
        return list(self._vectors)

    def follow_sql(self, kind: Kind) -> VectorIndex:
        """The held cache of one kind brought up to the rows SQL holds now, also while this store
        writes: for a kind whose rows a writer changes through SQL alone (a video's frames go with
        its row), rather than by adding and removing vectors itself."""
        with self._swap:
            cached = self._vectors.get(kind)
            if cached is None:
                return self._current(kind)
            current = self.metadata.generation(kind)
            since = self._generations.get(kind, 0)
            if since != current and self._caught_up(kind, cached, since, current) is None:
                cached = self._from_sql(kind, f"the {kind} cache could not follow SQL to generation {current}")
                self._vectors[kind] = cached
            self._generations[kind] = current
            return cached

    def catch_up(self) -> bool:
        """Bring this store up to date with the database now; True when anything changed.

        The caches held catch up in place (see `vectors`). When the database now names another
        model, or is another database (its identity changed), they are dropped and the next use
        loads them whole; `last_full_load` says why."""
        meta = self.metadata.get_meta()
        known = self._model_meta
        changed = False
        catch_ups = self.catch_ups
        if known is not None:
            facts = ("model", "dim", "database_id")
            moved = [key for key in facts if meta.get(key) != known.get(key)]
            if moved:
                with self._swap:
                    self._model_meta = None
                    self._vectors.clear()
                    self._generations.clear()
                self._note_full_load(f"the index's {' and '.join(moved)} changed")
                changed = True
        for kind in list(self._vectors):
            with self._swap:  # waits for a catch-up another thread runs: then it is done
                self._current(kind)  # type: ignore[arg-type]
        return changed or self.catch_ups != catch_ups

    def _note_full_load(self, reason: str) -> None:
        self.last_full_load = reason
        _log.info("index %s: full load of a cache: %s", self.directory, reason)

    def _open_cache(self, kind: Kind, current: int) -> VectorIndex:
        """This folder's saved cache, caught up; or a new one from SQL (saved when possible)."""
        dim = self.dim or 0
        path = self.faiss_path(kind)
        stamp = VectorIndex.read_stamp(path)
        origin = self.metadata.get_meta().get("database_id")
        usable = dim and stamp is not None and stamp.get("origin", origin) == origin
        loaded = VectorIndex.load(path, dim) if usable else None
        if loaded is not None:
            self.full_loads += 1
            self._note_full_load(f"opened {path.name}")
        if loaded is not None and loaded[1] == current:
            return loaded[0]
        index = self._caught_up(kind, loaded[0], loaded[1], current) if loaded is not None else None
        behind = None if index is None else self._last_catch_up
        if index is None:
            why = (
                f"{path.name} is missing, unreadable or of another database"
                if loaded is None
                else (f"{path.name} (generation {loaded[1]}) could not catch up to {current}")
            )
            index = self._from_sql(kind, why)
        if not self._writing and dim and len(index) and (behind is None or behind >= _READER_SAVE_MIN_CHANGES):
            self._save_as_reader(kind, index, current)
        return index

    def _caught_up(self, kind: Kind, index: VectorIndex, since: int, current: int) -> VectorIndex | None:
        """`index` (at generation `since`) with the changes after it applied, in place; None when
        the database cannot say what changed (a cache from before change tracking, or one that
        disagrees with SQL afterwards: the caller then loads it whole)."""
        tracked_from = int(self.metadata.get_meta().get(f"tracked_from:{kind}", "0"))
        if since < tracked_from or since > current:
            return None
        table = _TABLES[kind]
        changes = self.metadata.changes_since(table, since)  # read before the index is locked
        index.apply(changes.ids, changes.vectors, changes.deleted)
        self._last_catch_up = len(changes.ids) + len(changes.deleted)
        # A safety net against a write that left no trace: when nothing was written meanwhile,
        # the cache must hold exactly as many vectors as SQL has rows.
        if self.metadata.generation(kind) == current and len(index) != self.metadata.count(table):
            return None
        return index

    def _from_sql(self, kind: Kind, reason: str) -> VectorIndex:
        self.full_loads += 1
        self._note_full_load(f"built from SQL: {reason}")
        dim = self.dim or 0
        if self.metadata.count(_TABLES[kind]) * dim * 4 > _IN_MEMORY_REBUILD_BYTES:
            # too many vectors to read at once: streamed from SQL within a memory budget
            from xmodal.indexer.store.bounded_build import build_bounded

            return build_bounded(self.metadata, _TABLES[kind], dim, self.faiss_path(kind))[0]
        index = VectorIndex(self.dim or 0)
        ids, vecs = self.metadata.vectors(_TABLES[kind])
        if len(ids):
            index.add(ids, vecs)
        return index

    def rebuild_vectors(self, kind: Kind) -> VectorIndex:
        """A new cache of one kind from SQL (repair)."""
        with self._swap:
            current = self.metadata.generation(kind)
            index = self._from_sql(kind, "asked to rebuild")
            self._vectors[kind], self._generations[kind] = index, current
            return index

    def save_vectors(self) -> None:
        """Persist the FAISS caches at the current SQL generation (writers only, under the lock)."""
        meta = self.metadata.get_meta()
        for kind, index in self._vectors.items():
            generation = int(meta.get(f"generation:{kind}", "0"))
            index.save(self.faiss_path(kind), generation, origin=meta.get("database_id"))  # type: ignore[arg-type]
            self._generations[kind] = generation

    def _save_as_reader(self, kind: Kind, index: VectorIndex, generation: int) -> None:
        """Save a cache this reader built, unless a writer of this folder (or another reader) is
        saving: the next reader then builds or catches up again, nothing is lost."""
        try:
            with FileLock(self.directory / ".cache.lock", blocking=False, preserve_lock_file=True):
                index.save(self.faiss_path(kind), generation, origin=self.metadata.get_meta().get("database_id"))
        except (Timeout, OSError):
            pass

    def optimize(self, lean: bool = False, memory_budget: int | None = None) -> dict[str, str]:
        """Rebuild each FAISS cache with the index type its size calls for (exact up to ~16k
        vectors, then IVF with exact re-scoring; `lean` keeps compressed codes in RAM and the full
        vectors memory-mapped). Returns a description of each kind's index type.

        memory_budget (bytes): build from SQL in streamed chunks so the build's memory stays near
        the budget, whatever the collection's size (lean; on-disk inverted lists when the codes
        alone exceed half of it; see indexer.store.bounded_build)."""
        from xmodal.indexer.store.vector_index import choose_plan

        described = {}
        with self.write_lock():
            for kind in ("image", "text", "frame"):
                if memory_budget is not None:
                    from xmodal.indexer.store.bounded_build import build_bounded

                    index, report = build_bounded(
                        self.metadata, _TABLES[kind], self.dim or 0, self.faiss_path(kind), budget=memory_budget
                    )
                    with self._swap:
                        self._vectors[kind] = index  # type: ignore[index]
                    described[kind] = f"{len(index)} vectors, {report.plan}"
                    continue
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
        """One writer at a time per database, and the FAISS caches of this folder to itself.

        Not blocking: a second writer gets IndexLockedError (exit 6). The lock dies with its
        holder: PostgreSQL drops a dead client's advisory lock, the kernel a dead process's flock.
        """
        message = f"another xmodal run is writing to index '{self.directory}'; try again when it ends"
        with ExitStack() as stack:
            if self.metadata.backend == "postgresql":
                stack.enter_context(_advisory_lock(self.metadata.engine, message))
            else:
                stack.enter_context(_file_lock(_sqlite_lock_path(self.metadata.engine, self.directory), message, 0))
            # readers of this folder hold the cache lock only for a save: worth waiting for
            stack.enter_context(_file_lock(self.directory / ".cache.lock", message, 60))
            for leftover in self.directory.glob("*.faiss*.tmp"):  # a killed writer's half-written cache
                try:
                    leftover.unlink()
                except OSError:
                    pass
            with self._swap:
                for kind in list(self._vectors):  # a cache held from before: current, then ours
                    self.vectors(kind)  # type: ignore[arg-type]
                self._writing = True
            try:
                yield
            except BaseException:
                self._vectors.clear()  # may be out of step with SQL: the next use rebuilds
                self._generations.clear()
                raise
            else:
                for kind in self._vectors:
                    self._generations[kind] = self.metadata.generation(kind)
            finally:
                self._writing = False


def _probe_index(url: str, path: Path) -> None:
    """IndexNotFoundError unless the database at url holds an xmodal index (a recorded model)."""
    try:
        metadata = MetadataStore.connect(url, create=False)
        with metadata.engine.connect():  # the server is there and lets us in
            pass
    except Exception as e:
        reason = (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0]
        raise IndexNotFoundError(f"cannot open the index database '{safe_url(url)}': {scrub(reason, url)}") from None
    try:
        holds_index = "model" in metadata.get_meta()
    except Exception:
        holds_index = False
    finally:
        metadata.close()
    if not holds_index:
        raise IndexNotFoundError(
            f"no xmodal index at '{path}' nor in the database '{safe_url(url)}'; create one with `xmodal index PATH`"
        )


@contextmanager
def _advisory_lock(engine: Engine, message: str) -> Iterator[None]:
    """The writer's PostgreSQL session-level advisory lock, on a connection kept for the run."""
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        for attempt in range(6):  # ~1 s: the server may not yet have noticed a writer just killed
            if connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": _WRITER_LOCK_KEY}).scalar():
                break
            if attempt == 5:
                raise IndexLockedError(message)
            time.sleep(0.2)
        try:
            yield
        finally:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _WRITER_LOCK_KEY})
            except Exception:
                connection.invalidate()  # closing the session releases the lock all the same
    finally:
        connection.close()


@contextmanager
def _file_lock(path: Path, message: str, timeout: float) -> Iterator[None]:
    lock = FileLock(path, timeout=timeout, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout:
        raise IndexLockedError(message) from None
    try:
        yield
    finally:
        lock.release()


def _sqlite_lock_path(engine: Engine, directory: Path) -> Path:
    """Beside the database file (two folders may share one); in the folder for an in-memory one."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return directory / ".lock"
    return Path(database).with_name(Path(database).name + ".lock")


def _sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory.absolute() / 'index.db'}"


def _write_settings(path: Path, data: dict) -> None:
    """Atomically; readable by the owner only when the URL carries a password, from the moment
    the file exists (mkstemp creates it 0600: no window where another user could read it)."""
    url = data.get("db_url")
    try:
        secret = bool(url and make_url(url).password)
    except Exception:
        secret = True  # cannot tell: keep it private
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2))
        if not secret:
            os.chmod(tmp, 0o644)  # nothing private in it: other users' tools may read it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

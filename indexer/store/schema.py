"""Metadata in SQL through SQLAlchemy 2: images, texts, failures and the index's own facts.

SQL is the source of truth: each row keeps its full-precision vector, so the FAISS files are a
derived cache that can always be rebuilt (crash safety, exact re-scoring). The schema is
versioned by Alembic (indexer.store.migrations): opening a database brings it up to date.

Change tracking, for the FAISS caches of every reader (other processes, other machines) on one
database: a transaction that writes or deletes rows of a kind moves that kind's generation on,
once; every row it writes records that generation, every row it deletes leaves a tombstone in
`deleted_rows`; `changes_since(kind, G)` is what a cache stamped G lacks. A transaction that
changes no row of a kind leaves its generation alone, so readers have nothing to catch up.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePath

import numpy as np
from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import (
    DeclarativeBase,
    InstrumentedAttribute,
    Mapped,
    ORMExecuteState,
    Session,
    defer,
    mapped_column,
    sessionmaker,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from xmodal.indexer.limits import DEFAULT_LIMITS
from xmodal.indexer.paths import folder_prefixes
from xmodal.indexer.store.feature_codec import decode_features, encode_features
from xmodal.indexer.store.migrations import SchemaChange, upgrade_database

__all__ = [
    "SCHEMA_VERSION",
    "Base",
    "ImageRow",
    "TextRow",
    "FailureRow",
    "MetaRow",
    "DeletedRow",
    "FrameRow",
    "VectorTable",
    "FactsRow",
    "Changes",
    "MetadataStore",
    "FsPath",
    "utcnow",
    "vector_to_blob",
    "blob_to_vector",
    "features_to_blob",
    "blob_to_features",
    "under_clause",
    "safe_url",
    "scrub",
    "is_busy",
]

# Version of the index folder's layout (xmodal.json); the database's schema is Alembic's revision.
SCHEMA_VERSION = 2

# Non-UTF-8 file names arrive as lone surrogates (PEP 383), which SQL drivers cannot store; they are
# moved to a private-use block and back, so every name round-trips exactly.
_TO_DB = {0xDC00 + b: 0xF700 + b for b in range(0x80, 0x100)}
_FROM_DB = {v: k for k, v in _TO_DB.items()}


class FsPath(TypeDecorator[str]):
    impl = String(4096)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else value.translate(_TO_DB)

    def process_result_value(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else value.translate(_FROM_DB)


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ImageRow(Base):
    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True, index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    model: Mapped[str] = mapped_column(String(512))
    indexed_at: Mapped[datetime] = mapped_column(DateTime)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    # The towers' features (float16) the projection head reads, for the learned fusion reranker.
    features: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    # The generation of the transaction that last wrote the vector (None: before change tracking).
    generation: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    # 'photo' or 'video' (a video's own vector and features are those of its most typical frame)
    media: Mapped[str] = mapped_column(String(8), default="photo", server_default="photo")


class TextRow(Base):
    __tablename__ = "texts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(FsPath, index=True)
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(512))
    indexed_at: Mapped[datetime] = mapped_column(DateTime)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    generation: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


class FailureRow(Base):
    __tablename__ = "failures"
    path: Mapped[str] = mapped_column(FsPath, primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(DateTime)


class DeletedRow(Base):
    """A tombstone: row `row_id` of `kind` was deleted by the transaction of `generation`."""

    __tablename__ = "deleted_rows"
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    row_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class FrameRow(Base):
    """A frame sampled from a video (an `images` row of media 'video'): its time and its vector."""

    __tablename__ = "frames"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(Integer, index=True)
    time: Mapped[float] = mapped_column(Float)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    generation: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


VectorTable = type[ImageRow] | type[TextRow] | type[FrameRow]


class PhotoTextRow(Base):
    """The text read in a photo (or, later, a video frame: `frame_time` in seconds, None for a photo).

    `status`: "text", "none" (no text) or "failed" (`reason` says why; a photo read in part keeps
    its lines, status "text", and the reason). `text` is the lines joined by newlines; `lines` is
    JSON, [{"text", "score", "box": [[x, y] x4]}] with corners as fractions of the picture's size.
    The database's own text index (migration 0005: SQLite FTS5 trigram, PostgreSQL pg_trgm) covers
    `text`."""

    __tablename__ = "photo_texts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(Integer, index=True)
    frame_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    engine: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    lines: Mapped[str] = mapped_column(Text)
    seconds: Mapped[float] = mapped_column(Float)
    read_at: Mapped[datetime] = mapped_column(DateTime)


# Tables whose writes move a generation on: images, texts and frames (the vectors' caches follow them),
# and facts (what is cached of them, e.g. the known places, follows "generation:facts").
_KIND_OF = {"images": "image", "texts": "text", "facts": "facts", "frames": "frame"}


@dataclass(frozen=True)
class Changes:
    """What happened to one kind's vectors after a generation: rows (re)written, rows deleted."""

    ids: np.ndarray
    vectors: np.ndarray
    deleted: np.ndarray


def vector_to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def blob_to_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def features_to_blob(features: np.ndarray) -> bytes:
    """Tower features as block-quantised int8 (indexer.store.feature_codec)."""
    return encode_features(features)


def blob_to_features(blob: bytes) -> np.ndarray:
    """float32 tower features of either stored encoding (int8 blocks, or float16 before revision 0004)."""
    return decode_features(blob)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def under_clause(
    column: ColumnElement[str] | InstrumentedAttribute[str],
    prefixes: Iterable[str],
    flavour: type[PurePath] | None = None,
) -> ColumnElement[bool]:
    """Paths equal to a prefix or inside it as a folder, in SQL, the same on every backend.

    A prefix comparison (`substr`), not LIKE: no wildcard (`%`, `_`) or quote in a folder name
    needs escaping, and it is case-sensitive on SQLite too (its LIKE is not). The folder separator
    is the platform's (indexer.paths; `flavour` overrides it, e.g. in tests of Windows paths).
    """
    clauses = []
    for prefix in prefixes:
        folder, inside = folder_prefixes(prefix, flavour)
        clauses.append(column == folder)
        clauses.append(func.substr(column, 1, len(inside), type_=FsPath) == literal(inside, FsPath))
    return or_(*clauses) if clauses else false()  # under no folder: nothing (an empty OR matches all)


def safe_url(url: str | URL) -> str:
    """The URL with its password masked, for messages and `xmodal info`."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: say nothing of its contents beyond the scheme
        return str(url).split(":", 1)[0] + ":…"


def scrub(message: str, url: str | URL | None) -> str:
    """A driver's error text without the URL's password, should the driver have echoed it."""
    try:
        password = make_url(url).password if url is not None else None
    except Exception:
        password = None
    return message.replace(str(password), "***") if password else message


def _sqlite_pragmas(busy_seconds: float, dbapi_connection: object, connection_record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    try:
        # First the wait for a database another connection holds, so every statement below has it.
        cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        # WAL: readers never block on, nor see half of, a writer's transaction; a crash rolls back.
        # Turning an old (rollback-journal) database into WAL takes it whole: when several
        # processes open it at once, SQLite may refuse one at once rather than make it wait
        # (two connections each holding a read lock and wanting more): that one tries again.
        deadline = time.monotonic() + busy_seconds
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as e:
                if not is_busy(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def is_busy(error: BaseException) -> bool:
    """Whether a database error means "held by another connection too long" (SQLite's
    "database is locked"/"busy"), as opposed to a missing or broken database."""
    text = str(getattr(error, "orig", None) or error).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


def _engine(url: str | URL, busy_seconds: float = DEFAULT_LIMITS.database_busy_seconds) -> Engine:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # no driver named: psycopg 3, the one the postgres extra installs
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql":
        args = {}
        if parsed.get_driver_name() == "psycopg":
            # a vanished client (a machine that lost power) must not hold the writer's lock for
            # hours: the server probes idle connections and drops dead ones within ~1 min
            args = {
                k: v
                for k, v in (
                    ("keepalives", 1),
                    ("keepalives_idle", 30),
                    ("keepalives_interval", 10),
                    ("keepalives_count", 3),
                )
                if k not in parsed.query
            }
        return create_engine(parsed, pool_pre_ping=True, connect_args=args)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": busy_seconds})
        event.listen(engine, "connect", functools.partial(_sqlite_pragmas, busy_seconds))
        return engine
    return create_engine(parsed)


def _forget_generations(session: Session, *args: object) -> None:
    session.info.pop("generations", None)
    session.info.pop("changed", None)


def _kind_of(entity: object) -> str | None:
    table = getattr(getattr(entity, "class_", entity), "__tablename__", None)
    return _KIND_OF.get(table) if isinstance(table, str) else None


class MetadataStore:
    """Rows of one index. Every write method is one transaction."""

    def __init__(self, engine: Engine, schema_change: SchemaChange | None = None) -> None:
        self.engine = engine
        self.schema_change = schema_change
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        event.listen(self._sessions, "after_commit", _forget_generations)
        event.listen(self._sessions, "after_rollback", _forget_generations)
        event.listen(self._sessions, "before_flush", self._track_orm_writes)
        event.listen(self._sessions, "do_orm_execute", self._track_bulk_writes)
        event.listen(self._sessions, "before_commit", self._record_generations)

    @classmethod
    def connect(
        cls, url: str | URL, create: bool = True, busy_seconds: float = DEFAULT_LIMITS.database_busy_seconds
    ) -> MetadataStore:
        """Open (and with create, make or upgrade) the database; SchemaTooNewError when it is newer.
        busy_seconds: how long a statement waits for a database another process holds (SQLite)."""
        engine = _engine(url, busy_seconds)
        try:
            change = upgrade_database(engine) if create else None
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, change)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self._sessions()

    def close(self) -> None:
        self.engine.dispose()

    # --- index facts -------------------------------------------------------------------------
    def get_meta(self) -> dict[str, str]:
        with self.session() as s:
            return {row.key: row.value for row in s.scalars(select(MetaRow))}

    def set_meta(self, values: dict[str, str], session: Session | None = None) -> None:
        def _write(s: Session) -> None:
            for key, value in values.items():
                s.merge(MetaRow(key=key, value=value))

        if session is not None:
            _write(session)
            return
        with self.session() as s, s.begin():
            _write(s)

    def generation(self, kind: str) -> int:
        """The kind's current generation (one primary-key read: cheap enough for every query)."""
        with self.session() as s:
            value = s.scalar(select(MetaRow.value).where(MetaRow.key == f"generation:{kind}"))
        return int(value) if value else 0

    # --- images -----------------------------------------------------------------------------
    def image_rows_at(self, paths: Sequence[str]) -> list[ImageRow]:
        """Rows of exactly these paths (files named on the command line), vectors left out."""
        rows: list[ImageRow] = []
        with self.session() as s:
            for start in range(0, len(paths), 500):  # bound the bind parameters per statement
                chunk = list(paths[start : start + 500])
                stmt = select(ImageRow).options(defer(ImageRow.vector, raiseload=True))
                rows.extend(s.scalars(stmt.where(ImageRow.path.in_(chunk))))
        return rows

    def image_rows_under(self, prefixes: Sequence[str], with_vectors: bool = False) -> list[ImageRow]:
        """Rows whose path lies under any of the prefixes (files or folders); all rows when empty.

        Vectors are left out unless asked for: an indexing run compares paths, sizes and times only.
        """
        stmt = select(ImageRow) if with_vectors else select(ImageRow).options(defer(ImageRow.vector, raiseload=True))
        if prefixes:
            stmt = stmt.where(under_clause(ImageRow.path, prefixes))
        with self.session() as s:
            return list(s.scalars(stmt.execution_options(yield_per=5000)))

    def count(self, table: type[Base]) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(table)) or 0)

    def vectors(self, table: VectorTable, ids: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the given rows, or of all rows; vectors float32 (n, dim)."""
        stmt = select(table.id, table.vector).order_by(table.id)
        if ids is not None:
            stmt = stmt.where(table.id.in_(list(ids)))
        return self._id_vectors(stmt)

    def _id_vectors(self, stmt) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
        with self.session() as s:
            pairs = s.execute(stmt).all()
        if not pairs:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        out_ids = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
        vecs = np.stack([blob_to_vector(p[1]) for p in pairs]).astype(np.float32, copy=False)
        return out_ids, vecs

    def changes_since(self, table: VectorTable, generation: int) -> Changes:
        """Rows written and rows deleted after `generation` (see the module's docstring)."""
        kind = _KIND_OF[table.__tablename__]
        with self.session() as s:
            deleted = np.fromiter(
                s.scalars(select(DeletedRow.row_id).where(DeletedRow.kind == kind, DeletedRow.generation > generation)),
                dtype=np.int64,
            )
        ids, vecs = self._id_vectors(
            select(table.id, table.vector).where(table.generation > generation).order_by(table.id)
        )
        return Changes(ids, vecs, deleted)

    def tower_features(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored tower features of the given photos; photos indexed without them are left out."""
        with self.session() as s:
            pairs = s.execute(
                select(ImageRow.id, ImageRow.features).where(ImageRow.id.in_(list(ids)), ImageRow.features.is_not(None))
            ).all()
        return {int(i): blob_to_features(blob) for i, blob in pairs if blob is not None}

    def ids_without_features(self) -> set[int]:
        """Photos indexed before tower features were stored."""
        with self.session() as s:
            return set(s.scalars(select(ImageRow.id).where(ImageRow.features.is_(None))))

    def failures(self) -> list[FailureRow]:
        with self.session() as s:
            return list(s.scalars(select(FailureRow).order_by(FailureRow.path)))

    # --- writing (inside the caller's transaction) ---------------------------------------------
    def insert_rows(self, session: Session, table: VectorTable, rows: list[dict]) -> list[int]:
        """Insert rows in one statement per driver batch (executemany-style INSERT … RETURNING on
        both SQLite and PostgreSQL); their new ids, in order. Rows get this transaction's generation."""
        if not rows:
            return []
        generation = self.bump_generation(session, _KIND_OF[table.__tablename__])
        stmt = insert(table).returning(table.id, sort_by_parameter_order=True)
        result = session.execute(stmt, [{**row, "generation": generation} for row in rows])
        return [int(i) for i in result.scalars()]

    def update_rows(self, session: Session, table: VectorTable, rows: list[dict]) -> None:
        """Bulk UPDATE by primary key (each dict holds `id`), one executemany."""
        if rows:
            generation = self.bump_generation(session, _KIND_OF[table.__tablename__])
            session.execute(update(table), [{**row, "generation": generation} for row in rows])

    def delete_ids(self, table: VectorTable, ids: Sequence[int], session: Session) -> None:
        """Delete rows and leave their tombstones (other folders' caches drop them on catch-up).
        A video's frames go with its `images` row."""
        if not ids:
            return
        kind = _KIND_OF[table.__tablename__]
        generation = self.bump_generation(session, kind)
        ids = sorted({int(i) for i in ids})
        for start in range(0, len(ids), 10_000):  # bounded IN lists
            chunk = ids[start : start + 10_000]
            if table is ImageRow:
                frames = list(session.scalars(select(FrameRow.id).where(FrameRow.item_id.in_(chunk))))
                self.delete_ids(FrameRow, frames, session)
            session.execute(delete(table).where(table.id.in_(chunk)))
            if table is ImageRow:  # a photo's facts go with it (no foreign key: SQLite would not enforce it)
                session.execute(delete(FactsRow).where(FactsRow.image_id.in_(chunk)))
                session.execute(delete(PhotoTextRow).where(PhotoTextRow.item_id.in_(chunk)))  # and its text
            session.execute(insert(DeletedRow), [{"kind": kind, "generation": generation, "row_id": i} for i in chunk])

    def _track_orm_writes(self, session: Session, flush_context: object, instances: object) -> None:
        """Rows added, changed or deleted through the ORM (session.add / attribute changes /
        session.delete) are tracked like the bulk writes above, so no writer can forget to."""
        for row in [*session.new, *session.dirty]:
            if isinstance(row, (ImageRow, TextRow, FrameRow)) and (row in session.new or session.is_modified(row)):
                row.generation = self.bump_generation(session, _KIND_OF[row.__tablename__])
                self._changed(session, _KIND_OF[row.__tablename__])
        for row in list(session.deleted):
            if isinstance(row, (ImageRow, TextRow, FrameRow)) and row.id is not None:
                kind = _KIND_OF[row.__tablename__]
                session.add(DeletedRow(kind=kind, generation=self.bump_generation(session, kind), row_id=row.id))
                self._changed(session, kind)

    def _track_bulk_writes(self, state: ORMExecuteState) -> None:
        """INSERT, UPDATE and DELETE statements on the rows (bulk writes, `query(...).update()`)
        change their kind, whoever runs them."""
        if state.is_insert or state.is_update or state.is_delete:
            kind = _kind_of(state.bind_mapper)
            if kind is not None:
                self._changed(state.session, kind)

    def _changed(self, session: Session, kind: str) -> None:
        session.info.setdefault("changed", set()).add(kind)

    def _record_generations(self, session: Session) -> None:
        """At commit: the generation of each kind this transaction changed moves on (once)."""
        session.flush()  # ORM changes still pending are tracked (before_flush) before this looks
        for kind in sorted(session.info.get("changed", ())):
            generation = self.bump_generation(session, kind)
            session.merge(MetaRow(key=f"generation:{kind}", value=str(generation)))
        session.info.pop("changed", None)

    def bump_generation(self, session: Session, kind: str) -> int:
        """This transaction's generation of `kind` (the current one + 1, the same on every call),
        for the rows it writes. It becomes the kind's generation when the transaction commits
        having written or deleted a row of the kind; a transaction that changed none of them
        leaves the generation as it was (readers then have nothing to catch up)."""
        generations = session.info.setdefault("generations", {})
        if kind not in generations:
            row = session.get(MetaRow, f"generation:{kind}")
            generations[kind] = int(row.value) + 1 if row else 1
        return generations[kind]


class FactsRow(Base):
    """A photo's facts (indexer.facts): when, where, which camera, its names as words; one row per
    photo, deleted with it. `taken_at` is the camera's wall-clock time, `taken_offset` its minutes
    east of UTC when known, `taken_source` where the time came from."""

    __tablename__ = "facts"
    __table_args__ = (Index("ix_facts_place", "country", "region", "city"),)
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(Integer)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    taken_offset: Mapped[int | None] = mapped_column(Integer, nullable=True)
    taken_source: Mapped[str] = mapped_column(String(16))
    latitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    longitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    city: Mapped[str | None] = mapped_column(String(200), nullable=True)
    region: Mapped[str | None] = mapped_column(String(200), nullable=True)
    country: Mapped[str | None] = mapped_column(String(200), nullable=True)
    country_code: Mapped[str | None] = mapped_column(String(2), nullable=True)
    camera_make: Mapped[str | None] = mapped_column(String(200), nullable=True)
    camera_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    words: Mapped[str] = mapped_column(Text)

"""Metadata in SQL through SQLAlchemy 2: images, texts, failures and the index's own facts.

SQL is the source of truth: each row keeps its full-precision vector, so the FAISS files are a
derived cache that can always be rebuilt (crash safety, exact re-scoring).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, defer, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

__all__ = [
    "SCHEMA_VERSION",
    "Base",
    "ImageRow",
    "TextRow",
    "FailureRow",
    "MetaRow",
    "MetadataStore",
    "FsPath",
    "utcnow",
    "vector_to_blob",
    "blob_to_vector",
    "features_to_blob",
    "blob_to_features",
]

SCHEMA_VERSION = 1

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


class TextRow(Base):
    __tablename__ = "texts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(FsPath, index=True)
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(512))
    indexed_at: Mapped[datetime] = mapped_column(DateTime)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class FailureRow(Base):
    __tablename__ = "failures"
    path: Mapped[str] = mapped_column(FsPath, primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(DateTime)


def vector_to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def blob_to_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def features_to_blob(features: np.ndarray) -> bytes:
    return np.ascontiguousarray(features, dtype="<f2").tobytes()


def blob_to_features(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f2")


def _add_missing_columns(engine: Engine) -> None:
    """Columns added to a table after an index was made (nullable, so old rows stay valid)."""
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=engine.dialect)
                with engine.begin() as connection:
                    connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}'))


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _sqlite_pragmas(dbapi_connection: object, connection_record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL: readers never block on, nor see half of, a writer's transaction; a crash rolls back.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class MetadataStore:
    """Rows of one index. Every write method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def connect(cls, url: str, create: bool = True) -> MetadataStore:
        engine = create_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        if create:
            Base.metadata.create_all(engine)
            _add_missing_columns(engine)
        return store

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

    # --- images -----------------------------------------------------------------------------
    def image_rows_under(self, prefixes: Sequence[str], with_vectors: bool = False) -> list[ImageRow]:
        """Rows whose path lies under any of the prefixes (files or folders); all rows when empty.

        Vectors are left out unless asked for: an indexing run compares paths, sizes and times only.
        """
        stmt = select(ImageRow) if with_vectors else select(ImageRow).options(defer(ImageRow.vector, raiseload=True))
        with self.session() as s:
            rows = list(s.scalars(stmt.execution_options(yield_per=5000)))
        if not prefixes:
            return rows
        folder_prefixes = tuple(p.rstrip("/") + "/" for p in prefixes)
        exact = set(prefixes)
        return [r for r in rows if r.path in exact or r.path.startswith(folder_prefixes)]

    def count(self, table: type[Base]) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(table)) or 0)

    def vectors(self, table: type[ImageRow] | type[TextRow], ids: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the given rows, or of all rows; vectors float32 (n, dim)."""
        with self.session() as s:
            stmt = select(table.id, table.vector).order_by(table.id)
            if ids is not None:
                stmt = stmt.where(table.id.in_(list(ids)))
            pairs = s.execute(stmt).all()
        if not pairs:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        out_ids = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
        vecs = np.stack([blob_to_vector(p[1]) for p in pairs]).astype(np.float32, copy=False)
        return out_ids, vecs

    def tower_features(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored tower features of the given photos; photos indexed without them are left out."""
        with self.session() as s:
            pairs = s.execute(select(ImageRow.id, ImageRow.features).where(ImageRow.id.in_(list(ids)), ImageRow.features.is_not(None))).all()
        return {int(i): blob_to_features(blob) for i, blob in pairs}

    def ids_without_features(self) -> set[int]:
        """Photos indexed before tower features were stored."""
        with self.session() as s:
            return set(s.scalars(select(ImageRow.id).where(ImageRow.features.is_(None))))

    def failures(self) -> list[FailureRow]:
        with self.session() as s:
            return list(s.scalars(select(FailureRow).order_by(FailureRow.path)))

    def delete_ids(self, table: type[ImageRow] | type[TextRow], ids: Sequence[int], session: Session) -> None:
        if ids:
            session.execute(delete(table).where(table.id.in_(list(ids))))

    def bump_generation(self, session: Session, kind: str) -> int:
        """Each write transaction moves its kind's generation on, so a stale FAISS cache is detected."""
        key = f"generation:{kind}"
        row = session.get(MetaRow, key)
        generation = int(row.value) + 1 if row else 1
        session.merge(MetaRow(key=key, value=str(generation)))
        return generation


"""The database of the last release before migrations (xmodal 8427ffd, `indexer/storage.py`):
its tables, made the way that release made them (`Base.metadata.create_all`), with some rows.

Copied from `git show 8427ffd:indexer/storage.py` (the ORM models only), so the upgrade tests do
not depend on the repository's history being present.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, String, Text, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

__all__ = ["LEGACY_COLUMNS", "make_legacy_index"]


class _Base(DeclarativeBase):
    pass


class _Meta(_Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class _Image(_Base):
    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(4096), unique=True, index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    model: Mapped[str] = mapped_column(String(512))
    indexed_at: Mapped[datetime] = mapped_column(DateTime)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    grid: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    features: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)


class _Text(_Base):
    __tablename__ = "texts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(4096), index=True)
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(512))
    indexed_at: Mapped[datetime] = mapped_column(DateTime)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class _Failure(_Base):
    __tablename__ = "failures"
    path: Mapped[str] = mapped_column(String(4096), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(DateTime)


LEGACY_COLUMNS = {
    "images": {c.name for c in _Image.__table__.columns},
    "texts": {c.name for c in _Text.__table__.columns},
}


def make_legacy_index(
    directory: Path, url: str | None, photos: dict[str, np.ndarray], model: str, dim: int, grid_values: int = 8
) -> str:
    """An index folder as the previous release left it: xmodal.json (schema 1), the tables, one
    image row per photo (path -> unit vector, with a grid blob), a text row, a failure, and the
    meta facts. Returns the database URL."""
    directory.mkdir(parents=True, exist_ok=True)
    db = url or f"sqlite:///{directory.absolute() / 'index.db'}"
    engine = create_engine(db)
    _Base.metadata.create_all(engine)
    now = datetime(2026, 11, 1, 12, 0, 0)
    with Session(engine) as s, s.begin():
        for i, (path, vector) in enumerate(sorted(photos.items())):
            st = Path(path).stat()
            s.add(
                _Image(
                    path=path,
                    size=st.st_size,
                    mtime_ns=st.st_mtime_ns,
                    content_hash=f"{i:040x}",
                    width=64,
                    height=48,
                    taken_at=None,
                    model=model,
                    indexed_at=now,
                    vector=np.asarray(vector, "<f4").tobytes(),
                    grid=np.int32(1).tobytes() + np.zeros(grid_values, "<f2").tobytes(),
                    features=None,
                )
            )
        s.add(
            _Text(
                source="/captions.txt",
                text="a red square",
                content_hash="c" * 32,
                model=model,
                indexed_at=now,
                vector=np.asarray(next(iter(photos.values())), "<f4").tobytes(),
            )
        )
        s.add(_Failure(path="/photos/broken.jpg", reason="cannot identify image file", failed_at=now))
        for key, value in {
            "model": model,
            "dim": str(dim),
            "normalized": "true",
            "schema": "1",
            "generation:image": "3",
            "generation:text": "1",
        }.items():
            s.add(_Meta(key=key, value=value))
    engine.dispose()
    (directory / "xmodal.json").write_text(json.dumps({"schema": 1, "db_url": url}, indent=2))
    return db

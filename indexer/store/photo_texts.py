"""The text read in photos, in SQL: writing what a reading gave, what is left to read, counts, and
the candidates the database's text index finds for a search (search.photo_text scores them).

The text index is the database's own (migration 0005): SQLite's FTS5 table `photo_texts_fts` with
the trigram tokenizer, PostgreSQL's pg_trgm GIN index on `photo_texts.text` (ILIKE uses it). A
search hands over the pieces of its words (`patterns`): a text is a candidate when it holds any
one of them, case-insensitively, so a word read with one wrong character still brings its photo.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, insert, or_, select, text
from sqlalchemy.orm import Session

from xmodal.indexer.store.schema import ImageRow, PhotoTextRow, utcnow

__all__ = [
    "StoredText",
    "write_texts",
    "delete_texts",
    "unread_photos",
    "text_counts",
    "texts_of",
    "candidates",
    "escape_like",
]


@dataclass(frozen=True)
class StoredText:
    """One stored reading: the item, its frame time (None for a photo), status, text and lines."""

    item_id: int
    frame_time: float | None
    status: str
    reason: str | None
    engine: str
    text: str
    lines: list[dict]

    def as_dict(self) -> dict[str, object]:
        return {
            "frame_time": self.frame_time,
            "status": self.status,
            "reason": self.reason,
            "engine": self.engine,
            "text": self.text,
            "lines": self.lines,
        }


def write_texts(session: Session, readings: Sequence[tuple[int, object]], engine: str) -> None:
    """Store the readings of photos (item id, indexer.photo_text.PhotoText), replacing older ones."""
    if not readings:
        return
    ids = [item_id for item_id, _ in readings]
    delete_texts(session, ids)
    now = utcnow()
    rows = []
    for item_id, reading in readings:
        lines = [line.as_dict() for line in reading.lines]  # type: ignore[attr-defined]
        rows.append(
            {
                "item_id": int(item_id),
                "frame_time": None,
                "status": reading.status,  # type: ignore[attr-defined]
                "reason": reading.reason,  # type: ignore[attr-defined]
                "engine": engine[:128],
                "text": "\n".join(str(line["text"]) for line in lines),
                "lines": json.dumps(lines, ensure_ascii=False),
                "seconds": float(reading.seconds),  # type: ignore[attr-defined]
                "read_at": now,
            }
        )
    session.execute(insert(PhotoTextRow), rows)


def delete_texts(session: Session, item_ids: Iterable[int]) -> None:
    """Forget the photos' readings (photo rows removed or replaced: their text is read again)."""
    ids = sorted({int(i) for i in item_ids})
    for start in range(0, len(ids), 10_000):
        chunk = ids[start : start + 10_000]
        session.execute(delete(PhotoTextRow).where(PhotoTextRow.item_id.in_(chunk), PhotoTextRow.frame_time.is_(None)))


def unread_photos(session: Session) -> list[tuple[int, str]]:
    """(id, path) of the photos without a reading, by id (the order a run reads them in)."""
    read = PhotoTextRow.__table__.alias("read")
    query = (
        select(ImageRow.id, ImageRow.path)
        .outerjoin(read, and_(read.c.item_id == ImageRow.id, read.c.frame_time.is_(None)))
        .where(read.c.id.is_(None))
        .order_by(ImageRow.id)
    )
    return [(int(i), str(p)) for i, p in session.execute(query)]


def text_counts(session: Session) -> dict[str, int]:
    """Photos read, photos with text, photos whose reading failed."""
    rows = dict(
        session.execute(
            select(PhotoTextRow.status, func.count())
            .where(PhotoTextRow.frame_time.is_(None))
            .group_by(PhotoTextRow.status)
        ).all()
    )
    return {
        "photos_read": int(sum(rows.values())),
        "photos_with_text": int(rows.get("text", 0)),
        "text_failures": int(rows.get("failed", 0)),
    }


def texts_of(session: Session, item_id: int) -> list[StoredText]:
    """Every reading of one item (a photo's one, a video's frames by time)."""
    rows = session.execute(
        select(PhotoTextRow).where(PhotoTextRow.item_id == int(item_id)).order_by(PhotoTextRow.frame_time)
    ).scalars()
    return [
        StoredText(r.item_id, r.frame_time, r.status, r.reason, r.engine, r.text, json.loads(r.lines or "[]"))
        for r in rows
    ]


def candidates(
    session: Session, grams: Sequence[str], limit: int, likes: Sequence[str] = ()
) -> list[tuple[int, float | None, str, str]]:
    """(item id, frame time, text, lines JSON) of at most `limit` texts holding any of the `grams`
    (case-insensitive substrings) or matching any of the `likes` (LIKE patterns, `_` for any one
    character, `%`, `_` and `\\` in literal parts escaped with `\\`), found through the database's
    text index."""
    grams = [g for g in dict.fromkeys(g.lower() for g in grams) if g]
    likes = [p for p in dict.fromkeys(p.lower() for p in likes) if p]
    if not grams and not likes:
        return []
    dialect = session.get_bind().dialect.name
    table = PhotoTextRow.__table__
    patterns = ["%" + escape_like(g) + "%" for g in grams if dialect != "sqlite" or len(g) < 3]
    patterns += ["%" + p + "%" for p in likes]
    if dialect == "sqlite":
        long = [g for g in grams if len(g) >= 3]
        clauses, params = [], {}
        if long:  # the trigram index answers a MATCH of quoted strings of three characters or more
            params["match"] = " OR ".join('"' + g.replace('"', '""') + '"' for g in long)
            clauses.append("SELECT rowid FROM photo_texts_fts WHERE photo_texts_fts MATCH :match")
        for n, pattern in enumerate(patterns):  # shorter pieces, patterns with a gap: LIKE on the same table
            params[f"p{n}"] = pattern
            clauses.append(f"SELECT rowid FROM photo_texts_fts WHERE text LIKE :p{n} ESCAPE '\\'")
        ids_sql = " UNION ".join(clauses)
        query = text(
            f"SELECT item_id, frame_time, text, lines FROM photo_texts WHERE id IN ({ids_sql}) ORDER BY id LIMIT :limit"
        )
        rows = session.execute(query, {**params, "limit": int(limit)}).all()
    else:
        rows = session.execute(
            select(table.c.item_id, table.c.frame_time, table.c.text, table.c.lines)
            .where(or_(*[table.c.text.ilike(p, escape="\\") for p in patterns]))
            .order_by(table.c.id)
            .limit(int(limit))
        ).all()
    return [(int(r[0]), r[1], str(r[2]), str(r[3])) for r in rows]


def escape_like(literal: str) -> str:
    """A literal for a LIKE pattern (escape character: backslash)."""
    return literal.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

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

from sqlalchemy import Select, and_, delete, func, insert, or_, select, text
from sqlalchemy.orm import Session

from xmodal.indexer.store.schema import FrameRow, ImageRow, PhotoTextRow, utcnow

__all__ = [
    "StoredText",
    "Unread",
    "write_texts",
    "write_readings",
    "delete_texts",
    "unread_items",
    "unread_count",
    "text_counts",
    "texts_of",
    "candidates",
    "escape_like",
    "text_problems",
    "mend_texts",
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
    write_readings(session, [(item_id, None, reading) for item_id, reading in readings], engine)


def write_readings(session: Session, readings: Sequence[tuple[int, float | None, object]], engine: str) -> None:
    """Store readings of photos and video frames (item id, frame time or None for a photo,
    indexer.photo_text.PhotoText) by `engine` (the models that read them: indexer.photo_text
    `reading_models`), replacing older readings of the same photo or frame. A video's first frame
    reading also drops a reading of the video as if it were a photo (made before frames were read)."""
    if not readings:
        return
    row = PhotoTextRow
    photos = [int(i) for i, t, _ in readings if t is None]
    delete_texts(session, photos, frames=False)
    framed = sorted({int(i) for i, t, _ in readings if t is not None})
    if framed:
        session.execute(delete(row).where(row.item_id.in_(framed), row.frame_time.is_(None)))
        for item_id, time, _ in readings:
            if time is not None:
                session.execute(delete(row).where(row.item_id == int(item_id), row.frame_time == float(time)))
    now = utcnow()
    rows = []
    for item_id, time, reading in readings:
        lines = [line.as_dict() for line in reading.lines]  # type: ignore[attr-defined]
        rows.append(
            {
                "item_id": int(item_id),
                "frame_time": None if time is None else float(time),
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


def delete_texts(session: Session, item_ids: Iterable[int], frames: bool = True) -> None:
    """Forget the items' readings (rows removed or replaced: their text is read again); a video's
    frames' readings too unless `frames` is False."""
    ids = sorted({int(i) for i in item_ids})
    for start in range(0, len(ids), 10_000):
        chunk = ids[start : start + 10_000]
        where = PhotoTextRow.item_id.in_(chunk)
        session.execute(delete(PhotoTextRow).where(where if frames else and_(where, PhotoTextRow.frame_time.is_(None))))


@dataclass(frozen=True)
class Unread:
    """A photo, or a frame of a video (`frame_time` in seconds), without a reading by the current models."""

    item_id: int
    path: str
    frame_time: float | None = None


def _unread_queries(engine: str | None) -> tuple[Select, Select]:
    """(photos, frames) without a reading (by `engine`, when given): see `unread_items`."""
    read = PhotoTextRow.__table__.alias("read")
    same = and_(read.c.item_id == ImageRow.id, read.c.frame_time.is_(None))
    seen = and_(read.c.item_id == FrameRow.item_id, read.c.frame_time == FrameRow.time)
    if engine is not None:
        same = and_(same, read.c.engine == engine[:128])
        seen = and_(seen, read.c.engine == engine[:128])
    photos = (
        select(ImageRow.id, ImageRow.path)
        .outerjoin(read, same)
        .where(read.c.id.is_(None), ImageRow.media != "video")
        .order_by(ImageRow.id)
    )
    frames = (
        select(FrameRow.item_id, ImageRow.path, FrameRow.time)
        .join(ImageRow, ImageRow.id == FrameRow.item_id)
        .outerjoin(read, seen)
        .where(read.c.id.is_(None))
        .order_by(FrameRow.item_id, FrameRow.time)
    )
    return photos, frames


def unread_items(session: Session, engine: str | None = None) -> list[Unread]:
    """The photos and video frames without a reading, or (given `engine`) without one by those
    models: a change of models reads everything again, the older reading searchable meanwhile.
    Photos first, by id, then the frames by video and time (the order a run reads them in)."""
    photos, frames = _unread_queries(engine)
    out = [Unread(int(i), str(p)) for i, p in session.execute(photos)]
    out += [Unread(int(i), str(p), float(t)) for i, p, t in session.execute(frames)]
    return out


def unread_count(session: Session, engine: str | None = None) -> int:
    """How many photos and frames `unread_items` would give."""
    return sum(
        int(session.scalar(select(func.count()).select_from(q.order_by(None).subquery())) or 0)
        for q in _unread_queries(engine)
    )


def text_counts(session: Session, engine: str | None = None) -> dict[str, int]:
    """Photos read, photos with text, photos whose reading failed; the same of video frames; and
    (given `engine`, the current models) the photos and frames left to read by them."""
    rows = session.execute(
        select(PhotoTextRow.frame_time.is_(None), PhotoTextRow.status, func.count()).group_by(
            PhotoTextRow.frame_time.is_(None), PhotoTextRow.status
        )
    ).all()
    photos = {status: int(n) for is_photo, status, n in rows if is_photo}
    frames = {status: int(n) for is_photo, status, n in rows if not is_photo}
    out = {
        "photos_read": sum(photos.values()),
        "photos_with_text": photos.get("text", 0),
        "text_failures": photos.get("failed", 0),
        "frames_read": sum(frames.values()),
        "frames_with_text": frames.get("text", 0),
    }
    if engine is not None:
        out["to_read"] = unread_count(session, engine)
    return out


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


# --- checking and mending (xmodal check) ----------------------------------------------------------
_STATUSES = ("text", "none", "failed")
_FTS = "photo_texts_fts"
_TRGM_INDEX = "ix_photo_texts_trgm"
# SQLite's text index and the triggers that keep it in step, as migration 0006 made them.
_SQLITE_INDEX = {
    _FTS: f"CREATE VIRTUAL TABLE {_FTS} USING fts5(text, content='photo_texts', content_rowid='id', "
    "tokenize='trigram')",
    "photo_texts_ai": "CREATE TRIGGER photo_texts_ai AFTER INSERT ON photo_texts BEGIN "
    f"INSERT INTO {_FTS}(rowid, text) VALUES (new.id, new.text); END",
    "photo_texts_ad": "CREATE TRIGGER photo_texts_ad AFTER DELETE ON photo_texts BEGIN "
    f"INSERT INTO {_FTS}({_FTS}, rowid, text) VALUES ('delete', old.id, old.text); END",
    "photo_texts_au": "CREATE TRIGGER photo_texts_au AFTER UPDATE ON photo_texts BEGIN "
    f"INSERT INTO {_FTS}({_FTS}, rowid, text) VALUES ('delete', old.id, old.text); "
    f"INSERT INTO {_FTS}(rowid, text) VALUES (new.id, new.text); END",
}


def text_problems(session: Session) -> tuple[list[str], list[str]]:
    """(problems, notes) of the stored readings and their text index. Problems: unreadable rows,
    second readings of one photo or frame, a database text index out of step with the table
    (SQLite: FTS5's own integrity check, its triggers; PostgreSQL: the trigram index invalid).
    Notes (harmless, as facts of no photo are: a search only returns indexed photos): readings of
    no photo (its row deleted by a plain write) or of no frame (the video sampled again)."""
    problems, orphans = [], 0
    for row_id, why in _bad_rows(session):
        if why in (_NO_PHOTO, _NO_FRAME):
            orphans += 1
        else:
            problems.append(f"photo_text:{row_id} {why}")
    problems += _index_problems(session)
    notes = [f"{orphans} reading(s) of text belong to no photo or frame; check --repair drops them"] if orphans else []
    return problems, notes


_NO_PHOTO = "of no photo"
_NO_FRAME = "of no frame of its video"


def _bad_rows(session: Session) -> list[tuple[int, str]]:
    table = PhotoTextRow.__table__
    out: list[tuple[int, str]] = []
    orphans = session.scalars(
        select(table.c.id).where(table.c.item_id.not_in(select(ImageRow.id))).order_by(table.c.id)
    ).all()
    out += [(int(i), _NO_PHOTO) for i in orphans]
    seen = set(orphans)
    frame = select(FrameRow.id).where(FrameRow.item_id == table.c.item_id, FrameRow.time == table.c.frame_time)
    frameless = session.scalars(
        select(table.c.id)
        .where(table.c.frame_time.is_not(None), ~frame.exists(), table.c.id.not_in(seen or {-1}))
        .order_by(table.c.id)
    ).all()
    out += [(int(i), _NO_FRAME) for i in frameless]
    seen |= set(frameless)
    newest: dict[tuple[int, float | None], int] = {}
    for row_id, item_id, time, status, lines in session.execute(
        select(table.c.id, table.c.item_id, table.c.frame_time, table.c.status, table.c.lines).order_by(table.c.id)
    ):
        if row_id in seen:
            continue
        try:
            parsed = json.loads(lines)
            usable = status in _STATUSES and isinstance(parsed, list)
        except (TypeError, ValueError):
            usable = False
        if not usable:
            out.append((int(row_id), "unreadable (status or lines)"))
            continue
        key = (int(item_id), time)
        if key in newest:
            out.append((newest[key], "replaced by a newer reading of the same photo or frame"))
        newest[key] = int(row_id)
    return sorted(out)


def _index_problems(session: Session) -> list[str]:
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        names = set(session.scalars(text("SELECT name FROM sqlite_master WHERE name LIKE 'photo_texts_%'")))
        if _FTS not in names:
            return [f"{_FTS}: the text index is missing"]
        missing = [t for t in ("photo_texts_ai", "photo_texts_ad", "photo_texts_au") if t not in names]
        problems = [f"{_FTS}: trigger {t} is missing (the index no longer follows the table)" for t in missing]
        try:
            with session.begin_nested():
                session.execute(text(f"INSERT INTO {_FTS}({_FTS}, rank) VALUES ('integrity-check', 1)"))
        except Exception:  # noqa: BLE001 - SQLite reports an index out of step as corruption ("malformed")
            problems.append(f"{_FTS}: out of step with photo_texts (FTS5's integrity check fails)")
        return problems
    if dialect == "postgresql":
        valid = session.execute(
            text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = :name AND pg_table_is_visible(c.oid)"
            ),
            {"name": _TRGM_INDEX},
        ).scalar()
        if valid is False:
            return [f"{_TRGM_INDEX}: the trigram index is invalid"]
    return []


def mend_texts(session: Session) -> list[str]:
    """Mend what `text_problems` finds, losing no reading of an indexed photo or frame: readings of
    no photo or frame and older second readings are deleted, an unreadable row is deleted (its photo
    is read again by the next run), the text index is rebuilt from the table (and its triggers made
    again). Returns what was done."""
    done: list[str] = []
    bad = _bad_rows(session)
    if bad:
        ids = sorted({i for i, _ in bad})
        for start in range(0, len(ids), 10_000):
            session.execute(delete(PhotoTextRow).where(PhotoTextRow.id.in_(ids[start : start + 10_000])))
        done.append(f"removed {len(ids)} reading(s) of text of no photo or frame, unreadable or replaced")
    index = _index_problems(session)
    if not index:
        return done
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        names = set(session.scalars(text("SELECT name FROM sqlite_master WHERE name LIKE 'photo_texts_%'")))
        for name, statement in _SQLITE_INDEX.items():
            if name not in names:
                session.execute(text(statement))
        session.execute(text(f"INSERT INTO {_FTS}({_FTS}) VALUES ('rebuild')"))
        done.append(f"rebuilt the text index ({_FTS}) from photo_texts")
    elif dialect == "postgresql":
        session.execute(text(f"REINDEX INDEX {_TRGM_INDEX}"))
        done.append(f"rebuilt the trigram index ({_TRGM_INDEX})")
    return done

"""photo_texts: the text read in each photo (words, confidence, boxes), and the database's text index on it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

SQLite: an FTS5 table with the trigram tokenizer (`photo_texts_fts`, external content: the rows of
photo_texts, kept in step by triggers). PostgreSQL: a GIN index with pg_trgm's trigram operator
class on photo_texts.text (ILIKE uses it), when the pg_trgm extension is there or can be created;
without it the same queries scan the table (search.photo_text works either way).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE photo_texts_fts USING fts5(text, content='photo_texts', content_rowid='id', "
    "tokenize='trigram')",
    "CREATE TRIGGER photo_texts_ai AFTER INSERT ON photo_texts BEGIN "
    "INSERT INTO photo_texts_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER photo_texts_ad AFTER DELETE ON photo_texts BEGIN "
    "INSERT INTO photo_texts_fts(photo_texts_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER photo_texts_au AFTER UPDATE ON photo_texts BEGIN "
    "INSERT INTO photo_texts_fts(photo_texts_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO photo_texts_fts(rowid, text) VALUES (new.id, new.text); END",
]


def upgrade() -> None:
    op.create_table(
        "photo_texts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("frame_time", sa.Float(), nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("engine", sa.String(128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("lines", sa.Text(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("read_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_photo_texts_item_id", "photo_texts", ["item_id"])
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in _SQLITE_FTS:
            op.execute(statement)
    elif bind.dialect.name == "postgresql":
        available = bind.execute(
            sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")
        ).scalar()
        if available:
            try:
                with bind.begin_nested():  # a role that may not create extensions: no index, same results
                    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                    op.execute("CREATE INDEX ix_photo_texts_trgm ON photo_texts USING gin (text gin_trgm_ops)")
            except sa.exc.DBAPIError:
                pass


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in ("photo_texts_ai", "photo_texts_ad", "photo_texts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS photo_texts_fts")
    elif bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_photo_texts_trgm")
    op.drop_index("ix_photo_texts_item_id", table_name="photo_texts")
    op.drop_table("photo_texts")

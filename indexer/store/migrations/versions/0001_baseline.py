"""Baseline: the schema of the last release before migrations (xmodal 8427ffd).

Revision ID: 0001
Revises:
Create Date: 2026-11-28

An index made before migrations has these tables already (and no version table): its missing
nullable columns are added (indexes older than the stored tower features lack `features`), so
every database leaves this revision with exactly the baseline schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_PATH = sa.String(4096)


def _tables() -> dict[str, list[sa.Column]]:
    return {
        "meta": [
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", sa.Text(), nullable=False),
        ],
        "images": [
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("path", _PATH, nullable=False),
            sa.Column("size", sa.BigInteger(), nullable=False),
            sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
            sa.Column("content_hash", sa.String(64), nullable=False),
            sa.Column("width", sa.Integer(), nullable=False),
            sa.Column("height", sa.Integer(), nullable=False),
            sa.Column("taken_at", sa.DateTime(), nullable=True),
            sa.Column("model", sa.String(512), nullable=False),
            sa.Column("indexed_at", sa.DateTime(), nullable=False),
            sa.Column("vector", sa.LargeBinary(), nullable=False),
            sa.Column("grid", sa.LargeBinary(), nullable=True),
            sa.Column("features", sa.LargeBinary(), nullable=True),
        ],
        "texts": [
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("source", _PATH, nullable=False),
            sa.Column("text", sa.Text(), nullable=False),
            sa.Column("content_hash", sa.String(64), nullable=False),
            sa.Column("model", sa.String(512), nullable=False),
            sa.Column("indexed_at", sa.DateTime(), nullable=False),
            sa.Column("vector", sa.LargeBinary(), nullable=False),
        ],
        "failures": [
            sa.Column("path", _PATH, primary_key=True),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("failed_at", sa.DateTime(), nullable=False),
        ],
    }


_INDEXES = [
    ("ix_images_path", "images", ["path"], True),
    ("ix_images_content_hash", "images", ["content_hash"], False),
    ("ix_texts_source", "texts", ["source"], False),
    ("ix_texts_content_hash", "texts", ["content_hash"], False),
]


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    present = set(inspector.get_table_names())
    for name, columns in _tables().items():
        if name not in present:
            op.create_table(name, *columns)
            continue
        have = {c["name"] for c in inspector.get_columns(name)}
        for column in columns:  # an index from before a nullable column was added
            if column.name not in have and column.nullable:
                op.add_column(name, column)
    for name, table, indexed, unique in _INDEXES:
        if table not in present:
            op.create_index(name, table, indexed, unique=unique)


def downgrade() -> None:
    for name in ("failures", "texts", "images", "meta"):
        op.drop_table(name)

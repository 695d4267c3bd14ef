"""Change tracking for the local FAISS caches: each row records the generation that wrote it,
each deletion leaves a tombstone, and the database gets an identity the caches are stamped with.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

A cache stamped with generation G catches up by reading the rows written after G and the
tombstones after G. Rows written before this revision have no generation: a cache older than
the generation current at upgrade time (`tracked_from:KIND`) is rebuilt whole instead.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_META = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    for table in ("images", "texts"):
        op.add_column(table, sa.Column("generation", sa.BigInteger(), nullable=True))
        op.create_index(f"ix_{table}_generation", table, ["generation"])
    op.create_table(
        "deleted_rows",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("generation", sa.BigInteger(), primary_key=True),
        sa.Column("row_id", sa.BigInteger(), primary_key=True),
    )
    bind = op.get_bind()
    meta = dict(bind.execute(sa.select(_META.c.key, _META.c.value)).all())
    rows = [{"key": f"tracked_from:{kind}", "value": meta.get(f"generation:{kind}", "0")} for kind in ("image", "text")]
    rows.append({"key": "database_id", "value": uuid.uuid4().hex})
    op.bulk_insert(_META, rows)


def downgrade() -> None:
    op.execute(_META.delete().where(_META.c.key.in_(["tracked_from:image", "tracked_from:text", "database_id"])))
    op.drop_table("deleted_rows")
    for table in ("images", "texts"):
        op.drop_index(f"ix_{table}_generation", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("generation")

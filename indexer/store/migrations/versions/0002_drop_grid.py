"""Drop images.grid: the learned cross-attention reranker that read it left the product.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite rebuilds the table where it cannot drop a column in place
    with op.batch_alter_table("images") as batch:
        batch.drop_column("grid")


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("grid", sa.LargeBinary(), nullable=True))

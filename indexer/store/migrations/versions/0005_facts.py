"""facts: when, where and with which camera each photo was taken, and its names as words.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

A table of its own, one row per photo (indexer.facts), so that filling the facts of an existing
index never rewrites the photos' rows nor moves their vectors' generation on. Empty after the
upgrade: the next `xmodal index` run reads every photo's facts from its header (no embedding).
Downgrade drops it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "facts",
        sa.Column("image_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("taken_at", sa.DateTime(), nullable=True),
        sa.Column("taken_offset", sa.Integer(), nullable=True),
        sa.Column("taken_source", sa.String(16), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("city", sa.String(200), nullable=True),
        sa.Column("region", sa.String(200), nullable=True),
        sa.Column("country", sa.String(200), nullable=True),
        sa.Column("country_code", sa.String(2), nullable=True),
        sa.Column("camera_make", sa.String(200), nullable=True),
        sa.Column("camera_model", sa.String(200), nullable=True),
        sa.Column("words", sa.Text(), nullable=False),
    )
    op.create_index("ix_facts_taken_at", "facts", ["taken_at"])
    op.create_index("ix_facts_place", "facts", ["country", "region", "city"])


def downgrade() -> None:
    op.drop_index("ix_facts_place", table_name="facts")
    op.drop_index("ix_facts_taken_at", table_name="facts")
    op.drop_table("facts")

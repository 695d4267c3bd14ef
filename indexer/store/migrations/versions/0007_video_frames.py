"""Videos: images.media ('photo' or 'video') and the table of the frames sampled from each video.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

A video is one row of `images` (media 'video'); each frame sampled from it is a row of `frames`:
its item, its time in seconds and its vector, tracked by generation and tombstones like the other
rows (kind 'frame'), so every folder's frames.faiss cache catches up the same way.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("media", sa.String(8), nullable=False, server_default="photo"))
    op.create_table(
        "frames",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_frames_item_id", "frames", ["item_id"])
    op.create_index("ix_frames_generation", "frames", ["generation"])


def downgrade() -> None:
    op.drop_index("ix_frames_generation", table_name="frames")
    op.drop_index("ix_frames_item_id", table_name="frames")
    op.drop_table("frames")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("media")

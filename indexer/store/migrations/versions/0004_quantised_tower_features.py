"""images.features as block-quantised int8: 1.8 KB a photo instead of float16's 3.3 KB.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Data only (the column stays a nullable blob): each stored row of tower features is re-encoded
(indexer.store.feature_codec). Rows are read and written in batches by id, so a large index never
sits in memory whole. Downgrade writes float16 again.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

from xmodal.indexer.store.feature_codec import MAGIC, decode_features, encode_features

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_IMAGES = sa.table("images", sa.column("id", sa.Integer), sa.column("features", sa.LargeBinary))
_BATCH = 2000


def _recode(convert) -> None:  # noqa: ANN001 - blob -> blob or None (leave as is)
    bind = op.get_bind()
    last = -1
    while True:
        rows = bind.execute(
            sa.select(_IMAGES.c.id, _IMAGES.c.features)
            .where(_IMAGES.c.id > last, _IMAGES.c.features.is_not(None))
            .order_by(_IMAGES.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        changed = [{"row_id": i, "blob": new} for i, blob in rows if (new := convert(bytes(blob))) is not None]
        if changed:
            bind.execute(
                _IMAGES.update().where(_IMAGES.c.id == sa.bindparam("row_id")).values(features=sa.bindparam("blob")),
                changed,
            )
        last = rows[-1][0]


def upgrade() -> None:
    _recode(lambda blob: None if blob[: len(MAGIC)] == MAGIC else encode_features(np.frombuffer(blob, dtype="<f2")))


def downgrade() -> None:
    _recode(
        lambda blob: np.asarray(decode_features(blob), dtype="<f2").tobytes() if blob[: len(MAGIC)] == MAGIC else None
    )

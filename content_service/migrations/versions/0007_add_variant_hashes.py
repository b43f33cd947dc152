"""add image_variants.hash: the sha256 of a variant's bytes, for its content-addressed URL

Revision ID: 0007_add_variant_hashes
Revises: 0006_add_session_memory

Nullable: variants stored before this revision get theirs from their files when a server
starts (content_service/images/runtime.py), which a migration cannot do (it does not know the
media folder). The index serves the media HTTP server's lookup by hash.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_add_variant_hashes"
down_revision = "0006_add_session_memory"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("image_variants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_image_variants_hash", ["hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("image_variants", schema=None) as batch_op:
        batch_op.drop_index("ix_image_variants_hash")
        batch_op.drop_column("hash")

"""add image variants

Revision ID: 0002_add_variants
Revises: 0001_add_images
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_add_variants"
down_revision = "0001_add_images"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_variants",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("image_id", sa.String(length=32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_image_variants_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_variants")),
        sa.UniqueConstraint(
            "image_id", "width", "format", name=op.f("uq_image_variants_image_id_width_format")
        ),
    )


def downgrade() -> None:
    op.drop_table("image_variants")

"""add site settings

Revision ID: 0003_add_site_settings
Revises: 0002_add_variants
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_add_site_settings"
down_revision = "0002_add_variants"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "site_settings",
        sa.Column("environment_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("site_name", sa.String(length=200), nullable=False),
        sa.Column("default_locale", sa.String(length=35), nullable=False),
        sa.Column("theme", sa.String(length=100), nullable=False),
        sa.Column("seo_title", sa.String(length=500), nullable=False),
        sa.Column("seo_description", sa.Text(), nullable=False),
        sa.Column("extra", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_site_settings_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_site_settings_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("environment_id", name=op.f("pk_site_settings")),
    )
    with op.batch_alter_table("site_settings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_site_settings_site_id"), ["site_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("site_settings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_site_settings_site_id"))
    op.drop_table("site_settings")

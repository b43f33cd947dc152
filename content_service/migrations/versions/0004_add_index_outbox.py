"""add the embedding index outbox

Revision ID: 0004_add_index_outbox
Revises: 0003_add_site_settings
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_add_index_outbox"
down_revision = "0003_add_site_settings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "index_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("environment_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_index_outbox")),
    )
    with op.batch_alter_table("index_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_index_outbox_next_attempt_at_id", ["next_attempt_at", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("index_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_index_outbox_next_attempt_at_id")
    op.drop_table("index_outbox")

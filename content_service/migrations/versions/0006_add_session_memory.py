"""add session memory: model, working memory and a version (etag) on sessions

Revision ID: 0006_add_session_memory
Revises: 0005_add_search
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_add_session_memory"
down_revision = "0005_add_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing sessions: no model, empty working memory, version 1 (their first etag).
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("model", sa.String(length=200), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("working_memory", sa.Text(), nullable=False, server_default="{}")
        )
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("version")
        batch_op.drop_column("working_memory")
        batch_op.drop_column("model")

"""add index_outbox.traceparent: the trace of the write that queued a row

Revision ID: 0008_add_outbox_traceparent
Revises: 0007_add_variant_hashes

The W3C `traceparent` of the span that wrote the row (NULL when tracing is off, and for rows
written before this revision), so the outbox delivery continues the write's trace
(servicekit.tracing.span_from). Nullable, no default, no backfill: adding it rewrites nothing
on PostgreSQL, and a downgrade only loses trace links.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_add_outbox_traceparent"
down_revision = "0007_add_variant_hashes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("index_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traceparent", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("index_outbox", schema=None) as batch_op:
        batch_op.drop_column("traceparent")

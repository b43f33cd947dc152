"""add full-text search (search_documents + FTS5 / tsvector) and list indexes

Revision ID: 0005_add_search
Revises: 0004_add_index_outbox

search_documents holds the text of every page and post; the full-text index over it is
backend-specific raw SQL:

- SQLite: the FTS5 table `search_fts` with external content (search_documents), kept in step
  by three triggers, so every insert/update/delete of a document (including the ones a
  foreign-key cascade makes) updates the index in the same transaction. A later batch-mode
  migration that recreates search_documents must recreate these triggers.
- PostgreSQL: a stored generated `tsv` column with a GIN index.

Existing pages and posts are indexed by the upgrade (backfill), so they are searchable at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005_add_search"
down_revision = "0004_add_index_outbox"
branch_labels = None
depends_on = None

BATCH = 500

SQLITE_FTS = [
    # unicode61: Unicode word characters, case folded; remove_diacritics 2: "cafe" finds "café".
    """CREATE VIRTUAL TABLE search_fts USING fts5(
        environment_id, title, body,
        content='search_documents', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER search_documents_ai AFTER INSERT ON search_documents BEGIN
        INSERT INTO search_fts(rowid, environment_id, title, body)
        VALUES (new.id, new.environment_id, new.title, new.body);
    END""",
    """CREATE TRIGGER search_documents_ad AFTER DELETE ON search_documents BEGIN
        INSERT INTO search_fts(search_fts, rowid, environment_id, title, body)
        VALUES ('delete', old.id, old.environment_id, old.title, old.body);
    END""",
    """CREATE TRIGGER search_documents_au AFTER UPDATE ON search_documents BEGIN
        INSERT INTO search_fts(search_fts, rowid, environment_id, title, body)
        VALUES ('delete', old.id, old.environment_id, old.title, old.body);
        INSERT INTO search_fts(rowid, environment_id, title, body)
        VALUES (new.id, new.environment_id, new.title, new.body);
    END""",
]
SQLITE_FTS_DROP = [
    "DROP TRIGGER IF EXISTS search_documents_au",
    "DROP TRIGGER IF EXISTS search_documents_ad",
    "DROP TRIGGER IF EXISTS search_documents_ai",
    "DROP TABLE IF EXISTS search_fts",
]
POSTGRES_FTS = [
    # 'simple': lowercased words, no stemming and no stop words, like SQLite's unicode61.
    """ALTER TABLE search_documents ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple'::regconfig, title), 'A')
        || setweight(to_tsvector('simple'::regconfig, body), 'B')
    ) STORED""",
    "CREATE INDEX ix_search_documents_tsv ON search_documents USING gin (tsv)",
]


def upgrade() -> None:
    op.create_table(
        "search_documents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("environment_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("page_id", sa.String(length=32), nullable=True),
        sa.Column("post_id", sa.String(length=32), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(kind = 'page' AND page_id IS NOT NULL AND post_id IS NULL)"
            " OR (kind = 'post' AND post_id IS NOT NULL AND page_id IS NULL)",
            name=op.f("ck_search_documents_kind_matches_source"),
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_search_documents_environment_id_environments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["page_id"],
            ["pages.id"],
            name=op.f("fk_search_documents_page_id_pages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["posts.id"],
            name=op.f("fk_search_documents_post_id_posts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_documents")),
        sa.UniqueConstraint("page_id", name=op.f("uq_search_documents_page_id")),
        sa.UniqueConstraint("post_id", name=op.f("uq_search_documents_post_id")),
    )
    with op.batch_alter_table("search_documents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_search_documents_environment_id_kind", ["environment_id", "kind"], unique=False
        )
    with op.batch_alter_table("pages", schema=None) as batch_op:
        batch_op.create_index("ix_pages_environment_id_id", ["environment_id", "id"], unique=False)
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.create_index("ix_posts_environment_id_id", ["environment_id", "id"], unique=False)

    bind = op.get_bind()
    for statement in SQLITE_FTS if bind.dialect.name == "sqlite" else POSTGRES_FTS:
        op.execute(statement)
    _backfill(bind)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in SQLITE_FTS_DROP:
            op.execute(statement)
    else:
        op.execute("DROP INDEX IF EXISTS ix_search_documents_tsv")
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.drop_index("ix_posts_environment_id_id")
    with op.batch_alter_table("pages", schema=None) as batch_op:
        batch_op.drop_index("ix_pages_environment_id_id")
    with op.batch_alter_table("search_documents", schema=None) as batch_op:
        batch_op.drop_index("ix_search_documents_environment_id_kind")
    op.drop_table("search_documents")


# --- backfill (self-contained: a migration must not change when application code does) ---

_documents = sa.table(
    "search_documents",
    sa.column("environment_id"),
    sa.column("kind"),
    sa.column("page_id"),
    sa.column("post_id"),
    sa.column("title"),
    sa.column("body"),
    sa.column("updated_at"),
)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _clean(text: str) -> str:
    # The search code uses U+E000/U+E001 as highlight markers; NUL cannot be stored on
    # PostgreSQL. Neither belongs in indexed text.
    text = text[:200_000]  # as content_service.indexing.fulltext.MAX_INDEXED_CHARS
    return text.replace("\x00", " ").replace("\ue000", " ").replace("\ue001", " ")


def _batches(bind: sa.Connection, sql: str) -> Iterator[list[sa.Row[Any]]]:
    """Rows of `sql` (which selects id first) in id order, BATCH at a time (keyset)."""
    after = ""
    while True:
        rows = bind.execute(
            sa.text(f"{sql} WHERE id > :after ORDER BY id LIMIT {BATCH}"), {"after": after}
        ).all()
        if not rows:
            return
        yield list(rows)
        after = rows[-1][0]


def _backfill(bind: sa.Connection) -> None:
    now = int(time.time())
    for chunk in _batches(bind, "SELECT id, environment_id, title FROM pages"):
        texts: dict[str, list[str]] = {row[0]: [] for row in chunk}
        sections = bind.execute(
            sa.text(
                "SELECT ps.page_id, se.content FROM page_sections ps"
                " JOIN section_entries se ON se.id = ps.section_entry_id"
                " WHERE ps.page_id IN :ids ORDER BY ps.page_id, ps.position"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": list(texts)},
        ).all()
        for page_id, content in sections:
            try:
                texts[page_id].extend(s for s in _strings(json.loads(content)) if s.strip())
            except ValueError:
                continue
        bind.execute(
            _documents.insert(),
            [
                {
                    "environment_id": env_id,
                    "kind": "page",
                    "page_id": page_id,
                    "post_id": None,
                    "title": _clean(title),
                    "body": _clean("\n".join(texts[page_id])),
                    "updated_at": now,
                }
                for page_id, env_id, title in chunk
            ],
        )
    for chunk in _batches(bind, "SELECT id, environment_id, title, excerpt, body FROM posts"):
        bind.execute(
            _documents.insert(),
            [
                {
                    "environment_id": env_id,
                    "kind": "post",
                    "page_id": None,
                    "post_id": post_id,
                    "title": _clean(title),
                    "body": _clean("\n".join(t for t in (excerpt, body) if t)),
                    "updated_at": now,
                }
                for post_id, env_id, title, excerpt, body in chunk
            ],
        )

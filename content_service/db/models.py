"""SQLAlchemy models. Names follow the seed schema: snake_case, JSON as text, timestamps as
integer seconds. Alembic revisions in content_service/migrations own the real schema; a test
checks these models never drift from them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType

# Batch-mode migrations on SQLite recreate tables and need every constraint to have a name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _fk(target: str) -> ForeignKey:
    return ForeignKey(target, ondelete="CASCADE")


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(_fk("teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    # sha256 of the secret; the secret itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class Site(Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(_fk("teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class Environment(Base):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[str] = mapped_column(_fk("sites.id"))
    name: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[int] = mapped_column(BigInteger)


class SectionDefinition(Base):
    __tablename__ = "section_definitions"
    __table_args__ = (UniqueConstraint("environment_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    environment_id: Mapped[str] = mapped_column(_fk("environments.id"))
    name: Mapped[str] = mapped_column(String(63))
    schema: Mapped[str] = mapped_column(Text)
    default_content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class SectionEntry(Base):
    __tablename__ = "section_entries"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    environment_id: Mapped[str] = mapped_column(_fk("environments.id"), index=True)
    # NO ACTION (checked at the end of the statement, unlike RESTRICT): a definition in use
    # cannot be deleted on its own, yet deleting the whole environment cascades cleanly.
    definition_id: Mapped[str] = mapped_column(ForeignKey("section_definitions.id"), index=True)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class Page(Base):
    __tablename__ = "pages"
    __table_args__ = (
        UniqueConstraint("environment_id", "slug"),
        UniqueConstraint("environment_id", "request_id"),
        Index("ix_pages_environment_id_status_id", "environment_id", "status", "id"),
        # 0005: ListPages without a status filter reads in id order instead of sorting.
        Index("ix_pages_environment_id_id", "environment_id", "id"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    environment_id: Mapped[str] = mapped_column(_fk("environments.id"))
    slug: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16))
    metadata_json: Mapped[str] = mapped_column("metadata", Text)
    # Bumped on every write to the page or its sections; the etag is derived from it.
    version: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class PageSection(Base):
    __tablename__ = "page_sections"
    __table_args__ = (Index("ix_page_sections_page_id_position", "page_id", "position"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    page_id: Mapped[str] = mapped_column(_fk("pages.id"))
    section_entry_id: Mapped[str] = mapped_column(_fk("section_entries.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)


class Post(Base):
    __tablename__ = "posts"
    __table_args__ = (
        UniqueConstraint("environment_id", "slug"),
        Index("ix_posts_environment_id_status_id", "environment_id", "status", "id"),
        # 0005: ListPosts without a status filter reads in id order instead of sorting.
        Index("ix_posts_environment_id_id", "environment_id", "id"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    environment_id: Mapped[str] = mapped_column(_fk("environments.id"))
    slug: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(500))
    excerpt: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(200))
    # JSON list, as in the seed; post_tags holds the same tags for indexed filtering.
    tags: Mapped[str] = mapped_column(Text)
    published_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class PostTag(Base):
    __tablename__ = "post_tags"
    __table_args__ = (
        Index("ix_post_tags_environment_id_tag_post_id", "environment_id", "tag", "post_id"),
    )
    post_id: Mapped[str] = mapped_column(_fk("posts.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)
    environment_id: Mapped[str] = mapped_column(_fk("environments.id"))


class Navigation(Base):
    __tablename__ = "navigation"
    __table_args__ = (UniqueConstraint("environment_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    environment_id: Mapped[str] = mapped_column(_fk("environments.id"))
    name: Mapped[str] = mapped_column(String(63))
    # JSON tree of items: [{"label", "page_id" | "url", "children": [...]}].
    items: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class ChatSession(Base):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_site_id_id", "site_id", "id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The seed's sessions had no tenant scope; ours belong to a site.
    site_id: Mapped[str] = mapped_column(_fk("sites.id"))
    title: Mapped[str] = mapped_column(String(500))
    metadata_json: Mapped[str] = mapped_column("metadata", Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    # 0006: the assistant's model and working memory (JSON), saved after every turn; version
    # grows with every write to the session or its messages (the etag).
    model: Mapped[str] = mapped_column(String(200), server_default="")
    working_memory: Mapped[str] = mapped_column(Text, server_default="{}")
    version: Mapped[int] = mapped_column(Integer, server_default="1")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    session_id: Mapped[str] = mapped_column(_fk("sessions.id"))
    # Position in the session, 0-based, dense: keeps the order without relying on clocks.
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)


# --- 0001_add_images ---------------------------------------------------------------------


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        # Dedup per environment is a constraint, so concurrent uploads cannot race past it.
        UniqueConstraint("environment_id", "hash"),
        Index("ix_images_environment_id_state_id", "environment_id", "state", "id"),
        Index("ix_images_state_lease_expires_at", "state", "lease_expires_at"),
        Index("ix_images_blob_key", "blob_key"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    environment_id: Mapped[str] = mapped_column(_fk("environments.id"))
    filename: Mapped[str] = mapped_column(String(255))
    # Content-addressed path of the original under the media folder.
    blob_key: Mapped[str] = mapped_column(String(255))
    mime_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    # pending -> processing -> completed | failed
    state: Mapped[str] = mapped_column(String(16))
    alt_text: Mapped[str] = mapped_column(Text)
    metadata_json: Mapped[str] = mapped_column("metadata", Text)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


# --- 0002_add_variants -------------------------------------------------------------------


class ImageVariant(Base):
    __tablename__ = "image_variants"
    __table_args__ = (
        UniqueConstraint("image_id", "width", "format"),
        Index("ix_image_variants_hash", "hash"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    image_id: Mapped[str] = mapped_column(_fk("images.id"))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    # 0007_add_variant_hashes: sha256 of the bytes, the variant's URL (None only for a variant
    # stored before 0006 until a server start filled it in from its file).
    hash: Mapped[str | None] = mapped_column(String(64))


# --- 0003_add_site_settings --------------------------------------------------------------


class SiteSettings(Base):
    __tablename__ = "site_settings"
    # One row per environment, so an environment clone carries its settings along.
    environment_id: Mapped[str] = mapped_column(_fk("environments.id"), primary_key=True)
    site_id: Mapped[str] = mapped_column(_fk("sites.id"), index=True)
    site_name: Mapped[str] = mapped_column(String(200))
    default_locale: Mapped[str] = mapped_column(String(35))
    theme: Mapped[str] = mapped_column(String(100))
    seo_title: Mapped[str] = mapped_column(String(500))
    seo_description: Mapped[str] = mapped_column(Text)
    extra: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[int] = mapped_column(BigInteger)


# --- 0004_add_index_outbox ---------------------------------------------------------------


class IndexOutbox(Base):
    """Embedding work written in the same transaction as the content change; a dispatcher
    delivers it to vector_service and deletes the row once acknowledged."""

    __tablename__ = "index_outbox"
    __table_args__ = (Index("ix_index_outbox_next_attempt_at_id", "next_attempt_at", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[str] = mapped_column(String(32))
    site_id: Mapped[str] = mapped_column(String(32))
    environment_id: Mapped[str] = mapped_column(String(32))
    # page | section | post | image
    kind: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[str] = mapped_column(String(32))
    # upsert | delete
    op: Mapped[str] = mapped_column(String(8))
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    # 0008: the W3C traceparent of the write that queued the row (NULL: tracing was off).
    traceparent: Mapped[str | None] = mapped_column(String(128))


# --- 0005_add_search ---------------------------------------------------------------------

# search_documents.kind values.
SEARCH_PAGE = "page"
SEARCH_POST = "post"
# Highlight markers the search queries ask the backend to put around matches (Unicode
# private use characters, so they cannot collide with HTML or Markdown); never in indexed
# text (the writer removes them), so user content can never fake a highlight.
MARK_START = "\ue000"
MARK_END = "\ue001"


class SearchDocument(Base):
    """The text full-text search sees: one row per page (title + every string inside its
    sections' content) and per post (title; excerpt + body), written by
    content_service.indexing.fulltext in the same transaction as the content change. Deleting the
    page, post or environment cascades here.

    The full-text index itself lives outside the models, created in raw SQL by 0005: on SQLite
    the FTS5 table `search_fts` (external content = this table, kept in step by triggers); on
    PostgreSQL the generated column `tsv` with a GIN index. `include_name` below keeps those
    out of the models-vs-migrations comparison."""

    __tablename__ = "search_documents"
    __table_args__ = (
        CheckConstraint(
            "(kind = 'page' AND page_id IS NOT NULL AND post_id IS NULL)"
            " OR (kind = 'post' AND post_id IS NOT NULL AND page_id IS NULL)",
            name="kind_matches_source",
        ),
        Index("ix_search_documents_environment_id_kind", "environment_id", "kind"),
    )
    # Also the FTS5 rowid (INTEGER PRIMARY KEY on SQLite).
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment_id: Mapped[str] = mapped_column(_fk("environments.id"))
    # page | post
    kind: Mapped[str] = mapped_column(String(8))
    page_id: Mapped[str | None] = mapped_column(_fk("pages.id"), unique=True)
    post_id: Mapped[str | None] = mapped_column(_fk("posts.id"), unique=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[int] = mapped_column(BigInteger)


# Full-text objects created in raw SQL by 0005: on SQLite the FTS5 table and the shadow tables
# FTS5 keeps beside it. Nothing else is excluded from the comparison.
FTS_SQLITE_TABLES = frozenset(
    ["search_fts"] + [f"search_fts_{s}" for s in ("data", "idx", "docsize", "config", "content")]
)
FTS_POSTGRES_COLUMN = "tsv"
FTS_POSTGRES_INDEX = "ix_search_documents_tsv"


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Alembic `include_name` hook (autogenerate and the drift test): skips the raw-SQL
    full-text objects, which SQLAlchemy cannot model on both backends."""
    if name is None:
        return True
    if type_ == "table":
        return name not in FTS_SQLITE_TABLES
    if type_ == "column" and parent_names.get("table_name") == SearchDocument.__tablename__:
        return name != FTS_POSTGRES_COLUMN
    if type_ == "index":
        return name != FTS_POSTGRES_INDEX
    return True

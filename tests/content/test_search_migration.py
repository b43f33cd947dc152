"""Migration 0005 (full-text search): rows written before it are unchanged after it, it
indexes them, and it goes down and up again cleanly, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, text

from content_service import search
from content_service.db.engine import Database
from content_service.db.migrate import downgrade, upgrade
from content_service.db.models import Base, include_name
from servicekit.auth import Principal, Role
from servicekit.pagination import PageRequest

BEFORE = "0004_add_index_outbox"
SEED = [
    "insert into teams (id, name, created_at) values ('t1', 'Team', 1)",
    "insert into sites (id, team_id, name, created_at, updated_at)"
    " values ('s1', 't1', 'Site', 1, 1)",
    "insert into environments (id, site_id, name, created_at) values ('e1', 's1', 'dev', 1)",
    "insert into section_definitions (id, environment_id, name, schema, default_content,"
    " created_at, updated_at) values ('d1', 'e1', 'hero', '{\"type\":\"object\"}', '{}', 1, 1)",
    "insert into pages (id, environment_id, slug, title, status, metadata, version,"
    " created_at, updated_at)"
    " values ('p1', 'e1', 'home', 'Home', 'published', '{\"k\": 1}', 3, 1, 2)",
    "insert into section_entries (id, environment_id, definition_id, content, created_at,"
    " updated_at) values ('se1', 'e1', 'd1',"
    ' \'{"title":"Welcome aboard","items":[{"text":"Marmosets café"}],"n": 5}\', 1, 1)',
    "insert into page_sections (id, page_id, section_entry_id, position)"
    " values ('ps1', 'p1', 'se1', 0)",
    "insert into posts (id, environment_id, slug, title, excerpt, body, status, author, tags,"
    " published_at, created_at, updated_at) values ('o1', 'e1', 'hello', 'Hello world',"
    " 'An excerpt', 'The body about lemurs', 'draft', 'Ada', '[\"news\"]', null, 1, 1)",
    "insert into post_tags (post_id, tag, environment_id) values ('o1', 'news', 'e1')",
    "insert into navigation (id, environment_id, name, items, created_at, updated_at)"
    ' values (\'n1\', \'e1\', \'main\', \'[{"label":"Home","page_id":"p1","children":[]}]\','
    " 1, 1)",
    "insert into site_settings (environment_id, site_id, site_name, default_locale, theme,"
    " seo_title, seo_description, extra, updated_at)"
    " values ('e1', 's1', 'Site', 'en', 'dark', 'T', 'D', '{}', 1)",
    "insert into sessions (id, site_id, title, metadata, created_at, updated_at)"
    " values ('c1', 's1', 'Chat', '{}', 1, 1)",
    "insert into messages (id, session_id, seq, role, content, created_at)"
    " values ('m1', 'c1', 0, 'user', '{\"text\":\"hi\"}', 1)",
]
TABLES = [
    "teams",
    "sites",
    "environments",
    "section_definitions",
    "section_entries",
    "page_sections",
    "pages",
    "posts",
    "post_tags",
    "navigation",
    "site_settings",
    "sessions",
    "messages",
]
ADMIN = Principal(role=Role.ADMIN)


def dump(db: Database) -> dict[str, list[Any]]:
    with db.read() as s:
        return {
            table: [tuple(r) for r in s.execute(text(f"select * from {table} order by 1"))]
            for table in TABLES
        }


def find(db: Database, query: str) -> list[tuple[str, str]]:
    words = search.words(query)
    page = PageRequest(10, None, b"")
    with db.read() as s:
        return [(h.kind, h.id) for h in search.search(s, ADMIN, "e1", words, [], page)]


def test_rows_written_before_0005_survive_it_unchanged_and_become_searchable(
    db_url: str,
) -> None:
    db = Database(db_url)
    try:
        upgrade(db, BEFORE)
        with db.write() as s:
            for statement in SEED:
                s.execute(text(statement))
        before = dump(db)

        upgrade(db, "0005_add_search")
        assert dump(db) == before
        assert find(db, "marmosets") == [("page", "p1")]
        assert find(db, "welcome home") == [("page", "p1")]
        assert find(db, "lemurs") == [("post", "o1")]
        assert find(db, "excerpt") == [("post", "o1")]
        with db.read() as s:
            body = s.execute(text("select body from search_documents where page_id = 'p1'"))
            assert body.scalar() == "Welcome aboard\nMarmosets café"

        downgrade(db, BEFORE)
        assert dump(db) == before
        assert "search_documents" not in inspect(db.write_engine).get_table_names()
        upgrade(db, "0005_add_search")  # later revisions add columns of their own
        assert dump(db) == before
        assert find(db, "marmosets") == [("page", "p1")]
    finally:
        db.dispose()


def test_the_drift_filter_hides_only_the_raw_full_text_objects(migrated_db: Database) -> None:
    names = inspect(migrated_db.write_engine).get_table_names()
    assert "search_documents" in names
    for table in Base.metadata.tables.values():
        assert include_name(table.name, "table", {})
        for index in table.indexes:
            assert include_name(index.name, "index", {"table_name": table.name})
        for column in table.columns:
            assert include_name(column.name, "column", {"table_name": table.name})
    hidden = [n for n in names if not include_name(n, "table", {})]
    columns = {c["name"] for c in inspect(migrated_db.write_engine).get_columns("search_documents")}
    if migrated_db.dialect == "sqlite":
        # The FTS5 table and its shadow tables exist; they are what the filter hides.
        assert set(hidden) >= {"search_fts", "search_fts_data", "search_fts_idx"}
        assert "tsv" not in columns
    else:
        assert hidden == []
        assert "tsv" in columns
        indexes = {
            i["name"] for i in inspect(migrated_db.write_engine).get_indexes("search_documents")
        }
        assert "ix_search_documents_tsv" in indexes

"""Alembic owns the schema: models match migrations, and every revision goes up and down
with data in the tables, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from content_service.db.engine import Database
from content_service.db.migrate import alembic_config, downgrade, upgrade
from content_service.db.models import Base, include_name

SEED = [
    "insert into teams (id, name, created_at) values ('t1', 'Team', 1)",
    "insert into sites (id, team_id, name, created_at, updated_at)"
    " values ('s1', 't1', 'Site', 1, 1)",
    "insert into environments (id, site_id, name, created_at) values ('e1', 's1', 'dev', 1)",
    "insert into pages (id, environment_id, slug, title, status, metadata, version,"
    " created_at, updated_at)"
    " values ('p1', 'e1', 'home', 'Home', 'draft', '{\"k\": 1}', 1, 1, 1)",
]


def test_models_match_migrations(migrated_db: Database) -> None:
    with migrated_db.write_engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": include_name}
            ),
            Base.metadata,
        )
    assert diff == []


def test_one_linear_head_with_the_seed_names(migrated_db: Database) -> None:
    script = ScriptDirectory.from_config(alembic_config(migrated_db))
    assert len(script.get_heads()) == 1
    names = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert names[:4] == [
        "0000_initial",
        "0001_add_images",
        "0002_add_variants",
        "0003_add_site_settings",
    ]


def test_base_head_base_head_with_data(db_url: str) -> None:
    db = Database(db_url)
    upgrade(db, "0000_initial")
    with db.write() as s:
        for statement in SEED:
            s.execute(text(statement))
    upgrade(db)
    with db.read() as s:
        row = s.execute(text("select slug, title, metadata from pages where id = 'p1'")).one()
    assert tuple(row) == ("home", "Home", '{"k": 1}')
    downgrade(db, "0000_initial")
    with db.read() as s:
        assert s.execute(text("select title from pages where id = 'p1'")).scalar() == "Home"
    downgrade(db, "base")
    upgrade(db)
    with db.read() as s:
        assert s.execute(text("select count(*) from pages")).scalar() == 0
    db.dispose()


def test_batch_recreating_a_parent_table_keeps_child_rows(tmp_path: Path) -> None:
    """SQLite batch mode drops and recreates tables; that must never cascade to children.
    (SQLite only: PostgreSQL alters tables in place.)"""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext as Context

    from content_service.db.migrate import migration_connection

    db = Database(f"sqlite:///{tmp_path / 'batch.db'}")
    upgrade(db)
    with db.write() as s:
        for statement in SEED:
            s.execute(text(statement))
        s.execute(
            text(
                "insert into section_definitions (id, environment_id, name, schema,"
                " default_content, created_at, updated_at)"
                " values ('d1', 'e1', 'hero', '{}', '{}', 1, 1)"
            )
        )
        s.execute(
            text(
                "insert into section_entries (id, environment_id, definition_id, content,"
                " created_at, updated_at) values ('se1', 'e1', 'd1', '{}', 1, 1)"
            )
        )
        s.execute(
            text(
                "insert into page_sections (id, page_id, section_entry_id, position)"
                " values ('ps1', 'p1', 'se1', 0)"
            )
        )
    with migration_connection(db) as conn:
        ops = Operations(Context.configure(conn, opts={"render_as_batch": True}))
        with ops.batch_alter_table("pages", recreate="always") as batch:
            batch.alter_column("title", existing_type=sa.String(500), type_=sa.String(600))
    with db.read() as s:
        assert s.execute(text("select count(*) from page_sections")).scalar() == 1
        assert s.execute(text("select title from pages")).scalar() == "Home"
    db.dispose()


def test_0006_gives_existing_sessions_an_empty_memory_and_their_first_etag(db_url: str) -> None:
    db = Database(db_url)
    upgrade(db, "0005_add_search")
    with db.write() as s:
        for statement in SEED[:2]:
            s.execute(text(statement))
        s.execute(
            text(
                "insert into sessions (id, site_id, title, metadata, created_at, updated_at)"
                " values ('c1', 's1', 'Chat', '{\"m\": 1}', 1, 2)"
            )
        )
    upgrade(db, "0006_add_session_memory")
    with db.read() as s:
        row = s.execute(
            text("select title, metadata, model, working_memory, version from sessions")
        ).one()
    assert tuple(row) == ("Chat", '{"m": 1}', "", "{}", 1)
    downgrade(db, "0005_add_search")
    with db.read() as s:
        assert s.execute(text("select title from sessions")).scalar() == "Chat"
    db.dispose()


def test_outbox_rows_keep_through_the_traceparent_column(db_url: str) -> None:
    """0008 adds index_outbox.traceparent (nullable): pending rows survive it both ways (on
    SQLite, batch mode recreates the table)."""
    db = Database(db_url)
    upgrade(db, "0005_add_search")
    with db.write() as s:
        s.execute(
            text(
                "insert into index_outbox (team_id, site_id, environment_id, kind, source_id,"
                " op, attempts, last_error, next_attempt_at, created_at)"
                " values ('t1', 's1', 'e1', 'page', 'p1', 'upsert', 2, 'down', 5, 1)"
            )
        )
    upgrade(db, "0008_add_outbox_traceparent")
    with db.read() as s:
        row = s.execute(text("select source_id, attempts, traceparent from index_outbox")).one()
    assert tuple(row) == ("p1", 2, None)
    downgrade(db, "0005_add_search")
    with db.read() as s:
        assert s.execute(text("select source_id, last_error from index_outbox")).one() == (
            "p1",
            "down",
        )
    db.dispose()

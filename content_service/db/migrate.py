"""Programmatic Alembic: upgrade/downgrade, and the start-up check for a stale schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from content_service.db.engine import Database

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
FIX_COMMAND = "make migrate (or: python -m content_service migrate)"


class StaleSchemaError(RuntimeError):
    pass


def alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database.url.replace("%", "%%"))
    return config


def head_revision(database: Database) -> str:
    head = ScriptDirectory.from_config(alembic_config(database)).get_current_head()
    assert head is not None
    return head


def current_revision(database: Database) -> str | None:
    with database.write_engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def migration_connection(database: Database) -> Iterator[Connection]:
    """A connection for running migrations.

    On SQLite, batch mode recreates a table (copy, DROP, rename); with foreign keys ON, that
    DROP would cascade-delete every child row. So migrations run with foreign keys OFF (which
    SQLite only allows outside a transaction), and `foreign_key_check` must come back clean
    before the change is committed."""
    with database.write_engine.connect() as conn:
        if not database.is_sqlite:
            yield conn
            conn.commit()
            return
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            yield conn
            problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if problems:
                conn.rollback()
                raise RuntimeError(f"migration left broken foreign keys: {problems[:5]}")
            conn.commit()
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


def upgrade(database: Database, revision: str = "head") -> None:
    config = alembic_config(database)
    with migration_connection(database) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(database: Database, revision: str) -> None:
    config = alembic_config(database)
    with migration_connection(database) as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def ensure_current(database: Database) -> None:
    """Refuses to serve on a schema that is behind (or ahead of) the code."""
    have, want = current_revision(database), head_revision(database)
    if have != want:
        raise StaleSchemaError(
            f"database schema is at {have or 'nothing (empty database)'}, this code needs "
            f"{want}; run `{FIX_COMMAND}` first"
        )

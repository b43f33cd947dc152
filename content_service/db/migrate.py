"""Programmatic Alembic: upgrade/downgrade, and the start-up check for a stale schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

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


def upgrade(database: Database, revision: str = "head") -> None:
    config = alembic_config(database)
    with database.write_engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()


def downgrade(database: Database, revision: str) -> None:
    config = alembic_config(database)
    with database.write_engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
        conn.commit()


def ensure_current(database: Database) -> None:
    """Refuses to serve on a schema that is behind (or ahead of) the code."""
    have, want = current_revision(database), head_revision(database)
    if have != want:
        raise StaleSchemaError(
            f"database schema is at {have or 'nothing (empty database)'}, this code needs "
            f"{want}; run `{FIX_COMMAND}` first"
        )

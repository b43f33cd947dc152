"""Alembic environment: one transaction per migration, batch mode on SQLite."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from content_service.db.models import Base, include_name

config = context.config


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
        compare_type=True,
        # Raw-SQL full-text objects (FTS5 table, tsvector column) are not in the models.
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    from content_service.db.engine import Database
    from content_service.settings import ContentSettings

    url = config.get_main_option("sqlalchemy.url") or ContentSettings().database_url
    database = Database(url)
    try:
        with database.write_engine.connect() as conn:
            run_migrations(conn)
            conn.commit()
    finally:
        database.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported")
main()

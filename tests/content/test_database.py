"""SQLite settings on every connection, the unsafe-version refusal, and the stale-schema refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from content_service.db.engine import Database, UnsafeSqliteError, check_sqlite_version
from content_service.db.migrate import StaleSchemaError, downgrade, ensure_current, upgrade
from content_service.server import create_server
from tests.conftest import content_settings


def test_sqlite_connections_use_wal_and_safe_settings(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(db)
    for engine in (db.read_engine, db.write_engine):
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
            version = conn.execute(text("select sqlite_version()")).scalar()
            assert tuple(int(p) for p in str(version).split(".")) >= (3, 51, 3)
    # The file itself is in WAL mode, for any other process that opens it.
    import sqlite3

    raw = sqlite3.connect(tmp_path / "x.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    db.dispose()


def test_write_sessions_begin_immediate(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(db)
    with db.write() as s:
        # Inside BEGIN IMMEDIATE this connection already holds the write lock, so another
        # connection cannot start a write transaction.
        s.execute(text("select 1"))
        import pysqlite3.dbapi2 as sqlite

        other = sqlite.connect(str(tmp_path / "x.db"), timeout=0.1, isolation_level=None)
        with pytest.raises(sqlite.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
    db.dispose()


def test_affected_sqlite_versions_are_refused_in_wal_mode() -> None:
    with pytest.raises(UnsafeSqliteError, match=r"3\.40\.1.*WAL-reset"):
        check_sqlite_version((3, 40, 1), "wal")
    with pytest.raises(UnsafeSqliteError):
        check_sqlite_version((3, 51, 2), "WAL")
    check_sqlite_version((3, 51, 3), "wal")
    check_sqlite_version((3, 40, 1), "delete")


def test_server_refuses_a_stale_schema_and_names_the_fix(
    migrated_db: Database, tmp_path: Path
) -> None:
    downgrade(migrated_db, "0003_add_site_settings")
    with pytest.raises(StaleSchemaError, match="make migrate"):
        create_server(content_settings(tmp_path, migrated_db.url), database=migrated_db)
    upgrade(migrated_db)
    ensure_current(migrated_db)


def test_empty_database_is_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(StaleSchemaError, match="empty database"):
        ensure_current(db)
    db.dispose()

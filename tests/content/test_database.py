"""SQLite settings on every connection, the unsafe-version refusal, and the stale-schema refusal."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from content_service.db.checkpoint import BACKSTOP_PAGES
from content_service.db.engine import (
    Database,
    SqliteOptions,
    UnsafeSqliteError,
    check_sqlite_version,
)
from content_service.db.migrate import StaleSchemaError, downgrade, ensure_current, upgrade
from content_service.server import create_server
from tests.support import ContentServer, content_settings, wait_until


def test_sqlite_connections_use_wal_and_safe_settings(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(db)
    for engine in (db.read_engine, db.write_engine):
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
            # Commits checkpoint only past the backstop; the server's thread does the rest.
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == BACKSTOP_PAGES
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


def test_writers_of_one_process_take_turns_and_still_time_out(tmp_path: Path) -> None:
    """Writers in one process queue on a lock before BEGIN IMMEDIATE; one stuck behind a
    writer that outlasts busy_timeout fails UNAVAILABLE (retryable) instead of waiting on,
    and the next writer after the long one commits goes through."""
    from servicekit.errors import Unavailable

    db = Database(f"sqlite:///{tmp_path / 'x.db'}", sqlite=SqliteOptions(busy_timeout_ms=200))
    upgrade(db)
    holding, release = threading.Event(), threading.Event()

    def long_writer() -> None:
        with db.write() as s:
            s.execute(text("INSERT INTO teams (id, name, created_at) VALUES ('a', 'A', 0)"))
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=long_writer)
    thread.start()
    try:
        assert holding.wait(10)
        with pytest.raises(Unavailable, match="busy") as err, db.write() as s:
            s.execute(text("INSERT INTO teams (id, name, created_at) VALUES ('b', 'B', 0)"))
        assert err.value.reason == "DATABASE_BUSY"
        # A writer outside this Database's queue (another process's, say) meets SQLite's own
        # busy timeout; that is reported the same way.
        other = Database(
            f"sqlite:///{tmp_path / 'x.db'}", sqlite=SqliteOptions(busy_timeout_ms=200)
        )
        with pytest.raises(Unavailable, match="busy"), other.write() as s:
            s.execute(text("INSERT INTO teams (id, name, created_at) VALUES ('b', 'B', 0)"))
        other.dispose()
    finally:
        release.set()
        thread.join(10)
    with db.write() as s:
        s.execute(text("INSERT INTO teams (id, name, created_at) VALUES ('c', 'C', 0)"))
    with db.read() as s:
        assert s.execute(text("SELECT id FROM teams ORDER BY id")).scalars().all() == ["a", "c"]
    db.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])  # the content_server fixture, SQLite only
def test_the_server_checkpoints_the_wal_in_the_background(content_server: ContentServer) -> None:
    """A write reaches the database file itself (not only the WAL) soon after it commits,
    without a writer paying for the checkpoint: the server's checkpoint thread copies it."""
    import pysqlite3.dbapi2 as sqlite
    from loom.content.v1 import tenancy_pb2

    path = content_server.db.sqlite_path

    def teams_in_the_file() -> list[str]:
        # immutable=1 reads the database file alone, ignoring the WAL.
        raw = sqlite.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return [row[0] for row in raw.execute("SELECT name FROM teams")]
        except sqlite.OperationalError:  # not even the schema there yet
            return []
        finally:
            raw.close()

    content_server.admin.tenancy.CreateTeam(
        tenancy_pb2.CreateTeamRequest(team=tenancy_pb2.Team(name="wal"))
    )
    wait_until(lambda: "wal" in teams_in_the_file(), timeout=10, what="the checkpoint thread")
    assert teams_in_the_file() == ["wal"]


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

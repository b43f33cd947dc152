"""Online backup of what content_service owns: the relational database and the media blobs.

`ContentBackup.run(directory)` writes, while the service keeps serving writes:

    <directory>/content.db          SQLite: VACUUM INTO a temp file, integrity_check, rename
    <directory>/content.dump        PostgreSQL: pg_dump --format=custom of an exported snapshot
    <directory>/media/<key>         every blob the database copy refers to (originals, variants)

and yields events as it goes (progress, the database snapshot, the files written with their
sha256, a summary), which the BackupService streams to the backup command.

Media and the database copy: a blob is written before the row that refers to it commits, and
removed after the row that referred to it is gone, so a copy of the folder taken at any one
moment is never consistent with a database copy taken at another. So the blob folders are
pinned with hard links (instant, no bytes copied; media files are never modified in place,
only created and removed) before and after the database copy. A blob the copy refers to was
on disk at the moment of the copy, so one of the two pins holds it, unless it was created
after the first pin and removed before the second: then the copy is taken again (at most
MAX_ATTEMPTS times). Only the referenced blobs are copied into the backup; temp and trash
files never are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from content_service.db.engine import Database, sqlite_module
from servicekit.backupfiles import (
    FileEntry,
    copy_hashed,
    fsync_file,
    hash_file,
    link_or_copy,
    pinned_run,
    sync_filesystem,
)
from servicekit.errors import Aborted, FailedPrecondition, ServiceError

log = logging.getLogger(__name__)

MEDIA_FOLDERS = ("originals", "variants")
SQLITE_FILE = "content.db"
POSTGRES_FILE = "content.dump"
MEDIA_PREFIX = "media"
# Hard-link pins live inside the media folder (same file system, so links always work).
PIN_PREFIX = ".backup-pin-"
# A pin older than this was left by a crash (a running backup removes its own).
STALE_PIN_SECONDS = 24 * 3600
MAX_ATTEMPTS = 3
FILE_BATCH = 500
PROGRESS_EVERY_SECONDS = 0.5
OUTBOX_TABLE = "index_outbox"
REFERENCED_BLOBS_SQL = (
    "SELECT blob_key FROM images UNION SELECT path FROM image_variants ORDER BY 1"
)


# ----------------------------------------------------------------------------- events


@dataclass
class Progress:
    phase: str  # pin_media | database | media
    done_items: int = 0
    total_items: int = 0
    done_bytes: int = 0
    total_bytes: int = 0
    message: str = ""


@dataclass
class DatabaseSnapshot:
    backend: str
    server_version: str
    schema_revision: str
    snapshot_time: float
    tables: dict[str, int]
    outbox_pending: int
    outbox_max_id: int
    referenced: list[str] = field(repr=False)
    attempts: int
    path: str


@dataclass
class Summary:
    database: DatabaseSnapshot
    media_files: int
    media_bytes: int
    files: int
    bytes: int


Event = Progress | DatabaseSnapshot | list[FileEntry] | Summary


# ----------------------------------------------------------------------------- helpers


def sweep_stale_pins(media_root: Path, older_than_s: float = STALE_PIN_SECONDS) -> int:
    """Removes pin folders left by a crashed backup."""
    removed = 0
    if not media_root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    for entry in media_root.iterdir():
        with contextlib.suppress(OSError):
            if entry.name.startswith(PIN_PREFIX) and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry)
                removed += 1
    return removed


# ----------------------------------------------------------------------------- backup


class ContentBackup:
    """One backup run. Not thread-safe; the servicer runs one at a time."""

    def __init__(
        self,
        db: Database,
        media_root: Path,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        sqlite_busy_timeout_ms: int = 10_000,
        pg_dump: str = "pg_dump",
        pg_restore: str = "pg_restore",
    ) -> None:
        self.db = db
        self.media_root = media_root.resolve()
        self._cancelled = cancelled
        self._busy_timeout_ms = sqlite_busy_timeout_ms
        self._pg_dump = pg_dump
        self._pg_restore = pg_restore

    def _check_cancelled(self) -> None:
        if self._cancelled():
            raise Aborted("the backup was cancelled")

    def run(self, directory: Path) -> Iterator[Event]:
        """Fills `directory` (created by prepare_directory). On any failure, or when the
        caller stops iterating, removes it."""
        pin = self.media_root / f"{PIN_PREFIX}{secrets.token_hex(8)}"
        return pinned_run(directory, pin, self._run(directory, pin))

    def _run(self, directory: Path, pin: Path) -> Iterator[Event]:
        pinned: set[str] = set()
        yield Progress("pin_media", message="pinning the media folder (hard links)")
        self._pin(pin, pinned)
        snapshot: DatabaseSnapshot | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self._check_cancelled()
            yield Progress("database", message=f"copying the {self.backend} database")
            snapshot = self._snapshot_database(directory, attempt)
            self._pin(pin, pinned)
            missing = [key for key in snapshot.referenced if key not in pinned]
            if not missing:
                break
            log.info(
                "backup: %d referenced blob(s) vanished before they were pinned (e.g. %s); "
                "copying the database again",
                len(missing),
                missing[0],
            )
            (directory / snapshot.path).unlink(missing_ok=True)
            snapshot = None
        if snapshot is None:
            raise ServiceError(
                f"media blobs referenced by the database kept disappearing before they could "
                f"be pinned ({MAX_ATTEMPTS} attempts); retry the backup",
                reason="BACKUP_MEDIA_UNSTABLE",
            )
        size, digest = hash_file(directory / snapshot.path)
        yield Progress(
            "database",
            done_items=1,
            total_items=1,
            done_bytes=size,
            total_bytes=size,
            message=f"database copy complete ({snapshot.backend}, {size} bytes)",
        )
        yield snapshot
        files = [FileEntry(snapshot.path, size, digest)]
        yield list(files)
        total_bytes = size
        media_files = media_bytes = 0
        batch: list[FileEntry] = []
        keys = snapshot.referenced
        want_bytes = sum((pin / key).stat().st_size for key in keys)
        last = time.monotonic()
        for key in keys:
            self._check_cancelled()
            rel = f"{MEDIA_PREFIX}/{key}"
            size, digest = copy_hashed(pin / key, directory / rel, durable=False)
            if key.startswith("originals/") and key.rsplit("/", 1)[-1] != digest:
                log.warning("backup: media blob %s does not match its content hash", key)
            entry = FileEntry(rel, size, digest)
            files.append(entry)
            batch.append(entry)
            media_files += 1
            media_bytes += size
            total_bytes += size
            if len(batch) >= FILE_BATCH:
                yield batch
                batch = []
            if time.monotonic() - last >= PROGRESS_EVERY_SECONDS:
                last = time.monotonic()
                yield Progress("media", media_files, len(keys), media_bytes, want_bytes)
        if batch:
            yield batch
        yield Progress(
            "media",
            media_files,
            len(keys),
            media_bytes,
            want_bytes,
            message=f"{media_files} media blob(s) copied",
        )
        sync_filesystem(directory)
        yield Summary(snapshot, media_files, media_bytes, len(files), total_bytes)

    # ------------------------------------------------------------------------ media pins

    def _pin(self, pin: Path, pinned: set[str]) -> None:
        """Hard-links every blob not pinned yet into the pin folder."""
        for folder in MEDIA_FOLDERS:
            base = self.media_root / folder
            if not base.is_dir():
                continue
            for current, _dirs, names in os.walk(base):
                self._check_cancelled()
                for name in names:
                    source = Path(current) / name
                    key = source.relative_to(self.media_root).as_posix()
                    if key not in pinned and link_or_copy(source, pin / key):
                        pinned.add(key)

    # ------------------------------------------------------------------------ database

    @property
    def backend(self) -> str:
        return "sqlite" if self.db.is_sqlite else "postgresql"

    def _snapshot_database(self, directory: Path, attempt: int) -> DatabaseSnapshot:
        if self.db.is_sqlite:
            return self._snapshot_sqlite(directory, attempt)
        return self._snapshot_postgres(directory, attempt)

    def _snapshot_sqlite(self, directory: Path, attempt: int) -> DatabaseSnapshot:
        database = make_url(self.db.url).database
        if not database or database == ":memory:":
            raise FailedPrecondition("an in-memory SQLite database cannot be backed up")
        module = sqlite_module()
        target = directory / SQLITE_FILE
        temp = directory / f".{SQLITE_FILE}.tmp"
        temp.unlink(missing_ok=True)
        started = time.time()
        source = module.connect(database, isolation_level=None, check_same_thread=False)
        try:
            source.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            # One read transaction: a consistent snapshot, and in WAL mode writers never wait
            # for it. The live file is never copied as raw bytes.
            source.execute("VACUUM INTO ?", (str(temp),))
        finally:
            source.close()
        copy = module.connect(str(temp), isolation_level=None, check_same_thread=False)
        try:
            # A self-contained file: no -wal/-shm beside it.
            copy.execute("PRAGMA journal_mode=DELETE")
            result = [row[0] for row in copy.execute("PRAGMA integrity_check").fetchall()]
            if result != ["ok"]:
                raise ServiceError(
                    f"the database copy failed its integrity check: {result[:5]}",
                    reason="BACKUP_INTEGRITY",
                )
            info = _describe(_Reader(copy, SQLITE_TABLES_SQL))
        finally:
            copy.close()
        fsync_file(temp)
        os.replace(temp, target)
        return DatabaseSnapshot(
            backend="sqlite",
            server_version=str(module.sqlite_version),
            snapshot_time=started,
            attempts=attempt,
            path=SQLITE_FILE,
            **info,
        )

    def _snapshot_postgres(self, directory: Path, attempt: int) -> DatabaseSnapshot:
        import psycopg

        for tool in (self._pg_dump, self._pg_restore):
            if shutil.which(tool) is None:
                raise FailedPrecondition(
                    f"`{tool}` is not on content_service's PATH; install the PostgreSQL client "
                    "tools (Debian: apt-get install postgresql-client) of the server's major "
                    "version or newer",
                    reason="PG_DUMP_MISSING",
                )
        conninfo, password = libpq_target(self.db.url)
        env = client_env(password)
        target = directory / POSTGRES_FILE
        temp = directory / f".{POSTGRES_FILE}.tmp"
        temp.unlink(missing_ok=True)
        started = time.time()
        with psycopg.connect(
            conninfo, password=password, autocommit=False, connect_timeout=10
        ) as conn:
            # The snapshot pg_dump will see is exported from this transaction, and stays
            # valid while it is open: counts, outbox position and referenced blobs below
            # describe exactly the dumped data.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            snapshot_id, server_version = row.fetchone() or ("", "")
            info = _describe(_Reader(conn, POSTGRES_TABLES_SQL))
            dump = subprocess.run(
                [
                    self._pg_dump,
                    "--format=custom",
                    f"--snapshot={snapshot_id}",
                    f"--file={temp}",
                    f"--dbname={conninfo}",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            conn.rollback()
        if dump.returncode != 0:
            raise ServiceError(
                f"pg_dump failed (exit {dump.returncode}): {dump.stderr.strip()[-2000:]}",
                reason="PG_DUMP_FAILED",
            )
        listing = subprocess.run(
            [self._pg_restore, "--list", str(temp)], capture_output=True, text=True, check=False
        )
        if listing.returncode != 0:
            raise ServiceError(
                f"the dump is unreadable (pg_restore --list): {listing.stderr.strip()[-2000:]}",
                reason="BACKUP_INTEGRITY",
            )
        fsync_file(temp)
        os.replace(temp, target)
        return DatabaseSnapshot(
            backend="postgresql",
            server_version=str(server_version),
            snapshot_time=started,
            attempts=attempt,
            path=POSTGRES_FILE,
            **info,
        )


# ------------------------------------------------------------------- reading a database


# Ordinary tables only: SQLite virtual tables (FTS5) are counted through their shadow tables.
SQLITE_TABLES_SQL = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
    "AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name"
)
POSTGRES_TABLES_SQL = (
    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
)


class _Reader:
    """The few queries a description needs, over a DB-API connection of either backend (both
    pysqlite3 and psycopg connections have `execute` returning a cursor)."""

    def __init__(self, conn: Any, tables_sql: str) -> None:
        self.conn = conn
        self.tables_sql = tables_sql

    def tables(self) -> list[str]:
        return [str(r[0]) for r in self.conn.execute(self.tables_sql).fetchall()]

    def scalar_row(self, sql: str) -> tuple[Any, ...]:
        return tuple(self.conn.execute(sql).fetchone())

    def column(self, sql: str) -> list[Any]:
        return [r[0] for r in self.conn.execute(sql).fetchall()]


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _describe(reader: _Reader) -> dict[str, Any]:
    """Row counts, schema revision, outbox position and referenced blobs of a database."""
    tables = reader.tables()
    counts = {
        name: int(reader.scalar_row(f"SELECT count(*) FROM {quote_identifier(name)}")[0])
        for name in tables
    }
    revision = ""
    if "alembic_version" in counts:
        revision = ",".join(
            str(v) for v in reader.column("SELECT version_num FROM alembic_version")
        )
    pending = max_id = 0
    if OUTBOX_TABLE in counts:
        pending, max_id = reader.scalar_row(
            f"SELECT count(*), coalesce(max(id), 0) FROM {OUTBOX_TABLE}"
        )
    referenced: list[str] = []
    if "images" in counts and "image_variants" in counts:
        referenced = [str(k) for k in reader.column(REFERENCED_BLOBS_SQL) if k]
    return {
        "schema_revision": revision,
        "tables": counts,
        "outbox_pending": int(pending),
        "outbox_max_id": int(max_id),
        "referenced": referenced,
    }


def table_counts_sqlite(path: Path) -> tuple[list[str], dict[str, Any]]:
    """integrity_check result and the description of a SQLite file (opened read-only)."""
    module = sqlite_module()
    conn = module.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        check = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        return check, _describe(_Reader(conn, SQLITE_TABLES_SQL))
    finally:
        conn.close()


def table_counts_postgres(url: str) -> dict[str, Any]:
    import psycopg

    conninfo, password = libpq_target(url)
    with psycopg.connect(conninfo, password=password, autocommit=True, connect_timeout=10) as conn:
        return _describe(_Reader(conn, POSTGRES_TABLES_SQL))


def libpq_target(url: str) -> tuple[str, str | None]:
    """A SQLAlchemy PostgreSQL URL as a libpq URI without its password, and the password
    (for client tools it goes in PGPASSWORD, never on a command line)."""
    parsed = make_url(url)
    password = str(parsed.password) if parsed.password else None
    bare = parsed.set(drivername="postgresql", password=None)
    return bare.render_as_string(hide_password=False), password


def client_env(password: str | None) -> dict[str, str]:
    """The environment for pg_dump / pg_restore / psql."""
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    return env

"""Engines and per-RPC sessions for SQLite (default) and PostgreSQL.

SQLite is opened through pysqlite3, which bundles a SQLite without the WAL-reset corruption
bug. Write transactions begin with BEGIN IMMEDIATE so concurrent writers queue on
busy_timeout instead of failing with "database is locked" when a deferred transaction tries
to upgrade its read lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from content_service.db.checkpoint import BACKSTOP_PAGES, Checkpointer
from content_service.db.metrics import DATABASE_BUSY, WRITE_LOCK_WAIT_SECONDS
from content_service.db.raw import StatementConnection
from servicekit.errors import FieldViolation, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

# The WAL-reset bug (a checkpoint racing a writer could corrupt the database) affects SQLite
# 3.7.0 up to 3.51.2; 3.51.3 fixed it.
FIRST_FIXED_SQLITE = (3, 51, 3)


class UnsafeSqliteError(RuntimeError):
    pass


def check_sqlite_version(version: tuple[int, ...], journal_mode: str) -> None:
    """Refuses WAL mode on a SQLite that has the WAL-reset corruption bug."""
    if journal_mode.lower() == "wal" and tuple(version[:3]) < FIRST_FIXED_SQLITE:
        have = ".".join(map(str, version))
        need = ".".join(map(str, FIRST_FIXED_SQLITE))
        raise UnsafeSqliteError(
            f"SQLite {have} has the WAL-reset corruption bug (fixed in {need}); refusing to "
            "open the database in WAL mode. Install the pysqlite3 wheel (pip install "
            "'pysqlite3>=0.6.1'), which bundles a fixed SQLite."
        )


def sqlite_module() -> Any:
    import pysqlite3.dbapi2 as module  # bundles SQLite 3.53.x with FTS5

    return module


@dataclass(frozen=True)
class SqliteOptions:
    busy_timeout_ms: int = 10_000


# Execution option of Database.read_statement's connections.
SINGLE_STATEMENT = "loom_single_statement"


def _configure_sqlite(engine: Engine, options: SqliteOptions, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below); the driver's implicit BEGIN would be DEFERRED.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # WAL: readers never block the writer and the writer never blocks readers.
        cursor.execute("PRAGMA journal_mode=WAL")
        # Wait for the write lock instead of failing at once with SQLITE_BUSY.
        cursor.execute(f"PRAGMA busy_timeout={int(options.busy_timeout_ms)}")
        # SQLite leaves foreign keys off unless asked, per connection.
        cursor.execute("PRAGMA foreign_keys=ON")
        # Durable across application crashes in WAL mode; only an OS crash can lose the
        # last transactions, never corrupt the file.
        cursor.execute("PRAGMA synchronous=NORMAL")
        # A background thread checkpoints (db/checkpoint.py); a commit only past the backstop.
        cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(SINGLE_STATEMENT):
            return  # one statement is its own snapshot: no BEGIN / ROLLBACK round trips
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _busy() -> Unavailable:
    DATABASE_BUSY.inc()
    return Unavailable(
        "the database is busy: another write held it longer than the busy timeout "
        "(CONTENT_SQLITE_BUSY_TIMEOUT_MS); nothing was written, retry",
        reason="DATABASE_BUSY",
    )


@contextmanager
def _nul_refused() -> Iterator[None]:
    """PostgreSQL cannot store or even compare text holding NUL (0x00): a value the input
    rules did not already refuse (they refuse it in every stored text) is INVALID_ARGUMENT
    here, whichever statement met it, never INTERNAL. SQLite never raises it."""
    try:
        yield
    except Exception as exc:
        if "cannot contain NUL" not in str(getattr(exc, "orig", None) or exc):
            raise
        raise InvalidArgument(
            FieldViolation("request", "text must not contain NUL characters (0x00)"),
            reason="NUL_CHARACTER",
        ) from exc


class Database:
    """Both engines of one database and the two kinds of session an RPC may open."""

    def __init__(self, url: str, *, sqlite: SqliteOptions | None = None, pool_size: int = 8):
        self.url = url
        # SQLite's per-thread statement connections (read_statement).
        self._readers = threading.local()
        self._readers_lock = threading.Lock()
        self._reader_connections: list[Any] = []
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            module = sqlite_module()
            check_sqlite_version(module.sqlite_version_info, "wal")
            self.sqlite_path: Path | None = None
            if parsed.database and parsed.database != ":memory:":
                self.sqlite_path = Path(parsed.database)
                self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            options = self.sqlite_options = sqlite or SqliteOptions()
            url = str(parsed.set(drivername="sqlite+pysqlite"))
            common: dict[str, Any] = {"module": module, "pool_pre_ping": False}
            self.write_engine = create_engine(url, pool_size=4, max_overflow=4, **common)
            self.read_engine = create_engine(
                url, pool_size=pool_size, max_overflow=pool_size, **common
            )
            _configure_sqlite(self.write_engine, options, immediate=True)
            # SQLite has one writer at a time. Writers of this process queue here, and the next
            # starts the moment the last commits; queued on the database lock instead, each
            # would sleep in SQLite's busy handler (1, 2, 5, 10... ms) while the lock sat free.
            # Other processes' writers still meet busy_timeout.
            self._writers: threading.RLock | None = threading.RLock()
            self._queue_timeout = options.busy_timeout_ms / 1000
            _configure_sqlite(self.read_engine, options, immediate=False)
        else:
            if parsed.drivername in ("postgresql", "postgres"):
                url = str(parsed.set(drivername="postgresql+psycopg"))
            self.write_engine = create_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            self.read_engine = self.write_engine
            self.sqlite_path = None
            self._writers = None  # PostgreSQL: row locks, writers run side by side
            self._queue_timeout = 0.0

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction (BEGIN IMMEDIATE on SQLite), committed on exit.
        A SQLite database still locked by another writer after busy_timeout is UNAVAILABLE
        (reason DATABASE_BUSY): retryable, and the data as it was."""
        try:
            with (
                _nul_refused(),
                self._writer_turn(),
                Session(self.write_engine, expire_on_commit=False) as session,
                session.begin(),
            ):
                yield session
        except OperationalError as exc:
            if self.is_sqlite and "database is locked" in str(exc.orig):
                raise _busy() from exc
            raise

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        if self._writers is None:
            yield
            return
        waiting = time.perf_counter()
        turn = self._writers.acquire(timeout=self._queue_timeout)
        WRITE_LOCK_WAIT_SECONDS.observe(time.perf_counter() - waiting)
        if not turn:
            raise _busy()
        try:
            yield
        finally:
            self._writers.release()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session in one read transaction: a consistent snapshot, never takes the write lock."""
        with (
            _nul_refused(),
            Session(self.read_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    @contextmanager
    def read_statement(self) -> Iterator[StatementConnection]:
        """A driver connection for ONE read statement (a single statement sees one snapshot on
        both backends), for the hottest reads (API keys, GetPage; db.raw.RawSelect).

        SQLite: each thread keeps a connection of its own, outside the pool, in autocommit (no
        BEGIN, no ROLLBACK): a pool checkout and return cost more than the query itself
        (~75 against ~7 us under load here), and each BEGIN/ROLLBACK round trip gave the GIL
        away and back. Between statements it holds no transaction, so it never holds back a
        checkpoint. PostgreSQL: a pooled connection, its transaction ended on return."""
        if self.is_sqlite:
            yield self._thread_reader()
            return
        with (
            _nul_refused(),
            self.read_engine.connect().execution_options(**{SINGLE_STATEMENT: True}) as conn,
        ):
            try:
                yield StatementConnection(conn.dialect, conn.connection.driver_connection)
            finally:
                conn.rollback()

    def _thread_reader(self) -> StatementConnection:
        reader: StatementConnection | None = getattr(self._readers, "connection", None)
        if reader is None:
            # Made by the read engine (its connect hook sets WAL, busy_timeout, autocommit),
            # then taken out of the pool for good: this thread's until dispose().
            fairy = self.read_engine.raw_connection()
            driver = fairy.driver_connection
            fairy.detach()
            reader = StatementConnection(self.read_engine.dialect, driver)
            self._readers.connection = reader
            with self._readers_lock:
                self._reader_connections.append(reader.driver_connection)
        return reader

    def checkpointer(self) -> Checkpointer | None:
        """The background WAL checkpointer for this database (SQLite files only), unstarted."""
        if self.sqlite_path is None:
            return None
        return Checkpointer(
            self.sqlite_path,
            sqlite_module(),
            busy_timeout_ms=self.sqlite_options.busy_timeout_ms,
        )

    def dispose(self) -> None:
        with self._readers_lock:
            for connection in self._reader_connections:
                connection.close()
            self._reader_connections.clear()
        self._readers = threading.local()
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()

"""Only one index dispatcher delivers at a time, whatever the number of content_service
processes: two dispatchers reading one page at different moments could deliver its older
text last. The lock dies with its holder (process exit or lost connection), so a replica
takes over without any timeout.

- SQLite: an exclusive flock on a file beside the database (SQLite databases are one host's).
- PostgreSQL: a session advisory lock held on a dedicated connection."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import Connection, make_url, text

from content_service.db.engine import Database

log = logging.getLogger(__name__)

# Any constant bigint: identifies this lock among the database's advisory locks.
ADVISORY_KEY = 0x6C6F6F6D_00000001


class DispatchLock(Protocol):
    def hold(self) -> bool:
        """True while this process holds the lock (acquiring it when free)."""

    def release(self) -> None: ...


class FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def hold(self) -> bool:
        if self._fh is not None:
            return True
        fh = self.path.open("a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock
            self._fh = None


class AdvisoryLock:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: Connection | None = None

    def hold(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("select 1"))
                return True
            except Exception:  # noqa: BLE001 - any failure means the lock is gone with it
                log.warning("lost the dispatch lock's connection; acquiring again")
                self.release()
        conn = self.db.write_engine.connect()
        try:
            got = bool(
                conn.execute(text("select pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
            )
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        # Out of the pool: closing it must end the session (and the lock), not recycle it.
        conn.detach()
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # the session lock goes with the connection
            self._conn = None


def dispatch_lock(db: Database) -> DispatchLock:
    if db.is_sqlite:
        path = make_url(db.url).database
        if not path or path == ":memory:":
            raise ValueError("the index dispatcher needs a SQLite file, not an in-memory database")
        return FileLock(Path(f"{path}.dispatch-lock"))
    return AdvisoryLock(db)

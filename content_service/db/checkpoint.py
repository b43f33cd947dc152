"""WAL checkpoints in a background thread of the serving process, for SQLite.

Left to itself, SQLite checkpoints inside the COMMIT of whichever writer takes the WAL past
1,000 pages: that one request copies every page in the WAL into the database file and waits
for two fsyncs, which in a bulk import was a fifth of the time. Here a thread checkpoints
every CHECKPOINT_EVERY_SECONDS instead (PASSIVE: it never blocks readers or writers, and it
runs in SQLite's C code without the GIL, so on another core), and writers' connections
checkpoint on commit only past BACKSTOP_PAGES (engine.py), should this thread fall behind or
not run at all (the backup and migration tools open the database without it)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_SECONDS = 0.25
# wal_autocheckpoint of every connection the service opens (pages of 4 KiB: ~40 MiB).
BACKSTOP_PAGES = 10_000


class Checkpointer:
    def __init__(
        self,
        path: Path,
        module: Any,
        *,
        busy_timeout_ms: int,
        every_seconds: float = CHECKPOINT_EVERY_SECONDS,
    ) -> None:
        self._path = path
        self._module = module
        self._busy_timeout = busy_timeout_ms / 1000
        self._every = every_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        conn = self._module.connect(
            str(self._path), isolation_level=None, timeout=self._busy_timeout
        )
        failing = False
        try:
            while not self._stop.wait(self._every):
                try:
                    # Nothing new in the WAL costs no I/O.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except self._module.Error as exc:
                    if not failing:  # once per streak, not four times a second
                        log.warning("background WAL checkpoint failed: %s", exc)
                    failing = True
                    continue
                if failing:
                    log.info("background WAL checkpoints work again")
                    failing = False
        finally:
            conn.close()

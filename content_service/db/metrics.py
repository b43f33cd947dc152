"""The database layer's Prometheus families: how long SQLite writers of this process wait for
their turn, and how many writes gave up with DATABASE_BUSY. Its scrape-time gauges (WAL size,
connection pools) are in content_service.gauges."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

WRITE_LOCK_WAIT_SECONDS: Final = Histogram(
    "loom_db_write_lock_wait_seconds",
    "Time a write transaction waited for this process's SQLite writer turn (SQLite only; "
    "PostgreSQL writers do not queue).",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DATABASE_BUSY: Final = Counter(
    "loom_db_busy_total",
    "Writes refused with UNAVAILABLE / DATABASE_BUSY: the SQLite write lock stayed taken "
    "longer than CONTENT_SQLITE_BUSY_TIMEOUT_MS. Nothing was written.",
)

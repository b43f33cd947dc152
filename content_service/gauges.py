"""content_service's gauges, computed when Prometheus scrapes (servicekit.metrics), never on
the request path: each scrape costs a few indexed queries and a stat of the database files.

- `OutboxGauges`: the index outbox (pending rows, failing rows, the oldest row's age): how far
  vector_service is behind the content.
- `ImageJobGauges`: image jobs waiting (pending), being processed, and processing with an
  expired lease (their worker is gone; the next claim takes them over). Completed and failed
  images only grow, so they are not counted here: the workers' job counters give their rates.
- `DatabaseGauges`: the SQLite WAL and database file sizes, and each connection pool's use."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric
from sqlalchemy import func, select

from content_service.db.engine import Database
from content_service.db.models import Image
from content_service.db.values import now
from content_service.indexing.status import outbox_counts
from servicekit.metrics import GaugeCollector, gauge

# The states a job is in until it ends (the claimable and the claimed).
OPEN_STATES = ("pending", "processing")


class _OfDatabase(GaugeCollector):
    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db


class OutboxGauges(_OfDatabase):
    name = "outbox"

    def gauges(self) -> Iterable[Metric]:
        with self._db.read() as s:
            pending, oldest, failing = outbox_counts(s)
        return [
            gauge(
                "loom_outbox_pending_rows",
                "Index changes not yet delivered to vector_service.",
                value=pending,
            ),
            gauge(
                "loom_outbox_failing_rows",
                "Pending index changes whose delivery failed at least once (GetIndexingStatus "
                "has the last error).",
                value=failing,
            ),
            gauge(
                "loom_outbox_oldest_pending_age_seconds",
                "Age of the oldest undelivered index change (0 when none): how far semantic "
                "search is behind the content.",
                value=max(0.0, time.time() - oldest) if oldest is not None else 0.0,
            ),
        ]


class ImageJobGauges(_OfDatabase):
    name = "image_jobs"

    def gauges(self) -> Iterable[Metric]:
        with self._db.read() as s:
            counts: dict[str, int] = {
                state: count
                for state, count in s.execute(
                    select(Image.state, func.count())
                    .where(Image.state.in_(OPEN_STATES))
                    .group_by(Image.state)
                )
            }
            expired = s.scalar(
                select(func.count()).where(
                    Image.state == "processing", Image.lease_expires_at <= now()
                )
            )
        jobs = gauge("loom_image_jobs", "Image jobs by state, of the open states.", ["state"])
        for state in OPEN_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        stalled = gauge(
            "loom_image_jobs_expired_leases",
            "Processing image jobs whose lease has expired: their worker stopped extending "
            "it (gone, or stuck); the next claim takes them over.",
            value=expired or 0,
        )
        return [jobs, stalled]


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class DatabaseGauges(_OfDatabase):
    name = "database"

    def gauges(self) -> Iterable[Metric]:
        families: list[Metric] = []
        path = self._db.sqlite_path
        if path is not None:
            families += [
                gauge(
                    "loom_sqlite_wal_bytes",
                    "Size of the SQLite write-ahead log. The background checkpointer copies "
                    "it into the database every 0.25 s; it grows while a long reader holds "
                    "it back.",
                    value=_size(path.with_name(path.name + "-wal")),
                ),
                gauge(
                    "loom_sqlite_database_bytes",
                    "Size of the SQLite database file.",
                    value=_size(path),
                ),
            ]
        used = gauge(
            "loom_db_pool_connections",
            "Database connections of this process, by pool and state (checked_out: in use by "
            "a request or a background thread; idle: open in the pool).",
            ["pool", "state"],
        )
        size = gauge(
            "loom_db_pool_size_connections",
            "Connections each pool keeps open (it may open up to as many again for a burst).",
            ["pool"],
        )
        pools: dict[str, Any] = {"write": self._db.write_engine.pool}
        if self._db.read_engine is not self._db.write_engine:
            pools["read"] = self._db.read_engine.pool
        for name, pool in pools.items():
            used.add_metric([name, "checked_out"], _count(pool, "checkedout"))
            used.add_metric([name, "idle"], _count(pool, "checkedin"))
            size.add_metric([name], _count(pool, "size"))
        return [*families, used, size]


def _count(pool: Any, method: str) -> int:
    """A QueuePool's count (0 for a pool without one, e.g. a test's StaticPool)."""
    found = getattr(pool, method, None)
    return int(found()) if callable(found) else 0

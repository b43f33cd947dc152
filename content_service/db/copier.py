"""Copies an environment's rows table by table (environment clone), in batched Core inserts:
one INSERT of many rows per chunk (the ORM's row-at-a-time unit of work was 25x slower, see
STYLE.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

# Its lines are the clone's progress, under the clone's logger.
log = logging.getLogger("content_service.clone")

CHUNK = 1_000
# Tables this size or larger get a log line per chunk, not only per table.
LARGE = 5_000


def table_of(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


class TableCopier:
    """Copies rows from environment `source` into `target`, table by table. Each table is
    read by key: first the list of source keys (an index-only read), then the rows CHUNK keys
    at a time with `key IN (...)` (primary or indexed key lookups, no sort), each chunk
    inserted with one executemany. No cursor stays open while we insert into the table it
    reads. `now` is the one timestamp every copy gets; `counts` the rows copied per table."""

    def __init__(self, session: Session, source: str, target: str, now: int) -> None:
        self.session = session
        self.source = source
        self.target = target
        self.now = now
        self.counts: dict[str, int] = {}

    def copy(
        self,
        name: str,
        model: Any,
        key: str,
        keys: Sequence[Any],
        transform: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> None:
        """Copies the rows of `model` whose `key` is in `keys`, each as `transform` makes it
        (None: not copied)."""
        table = table_of(model)
        column = table.c[key]
        total = 0
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            rows = self.session.execute(select(table).where(column.in_(chunk))).mappings()
            out = [r for r in (transform(dict(row)) for row in rows) if r is not None]
            if out:
                self.session.execute(insert(table), out)
            total += len(out)
            if len(keys) >= LARGE:
                log.info(
                    "clone %s -> %s: %s: %d of about %d rows",
                    self.source,
                    self.target,
                    name,
                    total,
                    len(keys),
                )
        self.counts[name] = total
        log.info("clone %s -> %s: copied %d %s", self.source, self.target, total, name)

    def keys(self, column: Any, *where: Any) -> list[Any]:
        return sorted(self.session.scalars(select(column).where(*where)))

"""db.bulk.insert_rows: multi-row statements of up to ROWS_PER_STATEMENT rows, on both
backends: every row lands with its values, whatever the count against the statement size, and
one bad row leaves none of them."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from content_service.db import bulk
from content_service.db.engine import Database
from content_service.indexing import outbox

COLUMNS = outbox._INSERT


def rows(count: int, tag: str) -> list[tuple[object, ...]]:
    return [
        (
            *("team", "site", "env", "page", f"{tag}-{i:04d}", "upsert", i % 7, None, i, 1000 + i),
            # traceparent: a writer's trace, or none (tracing off)
            f"00-{i + 1:032x}-{i + 1:016x}-01" if i % 2 else None,
        )
        for i in range(count)
    ]


def stored(db: Database) -> list[tuple[object, ...]]:
    with db.read() as s:
        result = s.execute(
            select(*(outbox.OUTBOX.c[c] for c in COLUMNS)).order_by(outbox.OUTBOX.c.source_id)
        )
        return [tuple(r) for r in result]


@pytest.mark.parametrize("count", [1, 99, 100, 101, 250, 1000])
def test_every_row_lands_with_its_values(migrated_db: Database, count: int) -> None:
    per_statement = bulk.MAX_PARAMETERS // len(COLUMNS)
    assert per_statement < 100  # so the counts above hit full and partial statements
    with migrated_db.write() as s:
        bulk.insert_rows(s, outbox.OUTBOX, COLUMNS, rows(count, "a"))
    assert stored(migrated_db) == rows(count, "a")


def test_one_bad_row_leaves_none(migrated_db: Database) -> None:
    bad = rows(250, "b")
    bad[230] = (None, *bad[230][1:])  # team_id is NOT NULL
    with pytest.raises(IntegrityError), migrated_db.write() as s:
        bulk.insert_rows(s, outbox.OUTBOX, COLUMNS, bad)
    with migrated_db.read() as s:
        assert s.scalar(select(func.count()).select_from(outbox.OUTBOX)) == 0


def test_an_unknown_column_is_refused_before_anything_is_sent(migrated_db: Database) -> None:
    with pytest.raises(ValueError, match="no column"), migrated_db.write() as s:
        bulk.insert_rows(s, outbox.OUTBOX, ("team_id", "colour"), [("t", "red")])

"""The catalog: a small LanceDB table (`_loom_catalog`) beside the collection tables that
records, per collection, which physical table is current, its generation, and the progress of
the last reindex.

It is a table rather than a local file so that the whole database can live at an
object-store URI, and it exists because LanceDB OSS cannot rename tables: a reindex builds a
new generation beside the old one and the catalog swaps to it in one write.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import pyarrow as pa

CATALOG_TABLE = "_loom_catalog"


class ReindexState(Enum):
    UNSPECIFIED = "unspecified"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class ReindexProgress:
    state: ReindexState = ReindexState.UNSPECIFIED
    source_model: str = ""
    source_dimensions: int = 0
    target_model: str = ""
    target_dimensions: int = 0
    total_rows: int = 0
    done_rows: int = 0
    start_time: float = 0.0
    end_time: float = 0.0
    error: str = ""
    target_table: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        data["state"] = self.state.value
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ReindexProgress:
        if not text:
            return cls()
        data = json.loads(text)
        data["state"] = ReindexState(data.get("state", "unspecified"))
        return cls(**data)

    def copy(self) -> ReindexProgress:
        return ReindexProgress(**asdict(self))


@dataclass(frozen=True)
class CatalogEntry:
    active_table: str  # "" when the collection has no table
    generation: int
    progress: ReindexProgress


class Catalog:
    """The catalog table, created on first open. Thread-safe."""

    def __init__(self, db: Any) -> None:
        schema = pa.schema(
            [
                pa.field("collection", pa.string(), nullable=False),
                pa.field("active_table", pa.string(), nullable=False),
                pa.field("generation", pa.int64(), nullable=False),
                pa.field("reindex", pa.string(), nullable=False),
                pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
            ]
        )
        self._lock = threading.Lock()
        self._table = db.create_table(CATALOG_TABLE, schema=schema, exist_ok=True)

    def entries(self) -> dict[str, CatalogEntry]:
        """The recorded entries by collection (the name of its first-generation table)."""
        rows = self._table.search().limit(None).to_arrow().to_pylist()
        return {
            r["collection"]: CatalogEntry(
                r["active_table"], int(r["generation"]), ReindexProgress.from_json(r["reindex"])
            )
            for r in rows
        }

    def write(
        self, collection: str, active_table: str, generation: int, progress: ReindexProgress
    ) -> None:
        row = pa.Table.from_pylist(
            [
                {
                    "collection": collection,
                    "active_table": active_table,
                    "generation": generation,
                    "reindex": progress.to_json(),
                    "updated_at": datetime.now(UTC),
                }
            ],
            schema=self._table.schema,
        )
        with self._lock:
            (
                self._table.merge_insert("collection")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(row)
            )

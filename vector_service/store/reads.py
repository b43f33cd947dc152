"""What searches and listings read: the collection's current table, queried without the
collection lock, so that no write, compaction or index build ever makes a search wait.

A search reads an immutable ReadView of the table; a reindex swap replaces the view's handle
in the collection state, it never changes one, so a search in flight keeps its table (which
is dropped only a minute after the swap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from servicekit.errors import FailedPrecondition
from vector_service.store.filters import Scope, quote
from vector_service.store.indexes import unindexed_text_rows
from vector_service.store.maintenance import Maintenance
from vector_service.store.options import StoreOptions
from vector_service.store.rows import (
    DISTANCE_COLUMN,
    ID_COLUMN,
    RESULT_COLUMNS,
    SCORE_COLUMN,
    SOURCE_COLUMN,
    STORED_COLUMNS,
    TEXT_COLUMN,
    VECTOR_COLUMN,
    read_rows,
)
from vector_service.store.tables import Collection, TableHandle, Tables


@dataclass(frozen=True)
class ReadView:
    """What a search reads: the collection's current table (immutable snapshot of the handle;
    a reindex swap replaces the handle, it never changes one)."""

    collection: Collection
    handle: TableHandle
    has_vector_index: bool


class Reader:
    def __init__(self, tables: Tables, maintenance: Maintenance, options: StoreOptions) -> None:
        self._tables = tables
        self._maintenance = maintenance
        self._options = options

    def list_documents(
        self, collection: Collection, scope: Scope, source_id: str, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to `limit` documents of the active table in id order after `after`, without
        text or vector. Lock-free like searches."""
        handle = self._tables.states[collection].active
        if handle is None:
            return []
        where = scope.sql()
        if source_id:
            where += f" AND {SOURCE_COLUMN} = {quote(source_id)}"
        if after is not None:
            where += f" AND {ID_COLUMN} > {quote(after)}"
        rows = read_rows(handle.table, where, STORED_COLUMNS).sort_by(ID_COLUMN).slice(0, limit)
        listed: list[dict[str, Any]] = rows.to_pylist()
        return listed

    def read_view(self, collection: Collection) -> tuple[ReadView | None, bool]:
        """The table a search reads, and whether a reindex is running (which allows searching
        an old table whose model differs from the configured one, with its own model)."""
        state = self._tables.states[collection]
        # Lock-free: staging is read before active, and the swap sets active before clearing
        # staging, so a search racing the swap never sees the old table without the reindex.
        reindexing = state.staging is not None
        handle = state.active
        if handle is None:
            return None, reindexing
        return ReadView(collection, handle, state.has_vector_index), reindexing

    def mismatch_error(self, view: ReadView) -> FailedPrecondition:
        return self._tables.mismatch(view.handle)

    def vector_search(
        self, view: ReadView, vector: NDArray[np.float32], scope: Scope, limit: int
    ) -> pa.Table:
        """Cosine nearest neighbours within the scope. The filter is applied before ranking
        (prefilter); with an ANN index at least `nprobes` partitions are probed and more when
        a narrow scope has not filled the limit, then candidates are re-ranked exactly."""
        query = (
            view.handle.table.search(vector, vector_column_name=VECTOR_COLUMN, query_type="vector")
            .distance_type("cosine")
            .where(scope.sql(), prefilter=True)
            .select([*RESULT_COLUMNS, DISTANCE_COLUMN])
            .limit(limit)
        )
        if view.has_vector_index:
            query = (
                query.minimum_nprobes(self._options.nprobes)
                .maximum_nprobes(0)
                .refine_factor(self._options.refine_factor)
            )
        result: pa.Table = query.to_arrow()
        return result

    def text_search(self, view: ReadView, text: str, scope: Scope, limit: int) -> pa.Table:
        """BM25 full-text match within the scope (filtered before ranking). Rows written since
        the index was refreshed are still searched (LanceDB scans them), only slower."""
        self._refresh_text_index(view)
        query = (
            view.handle.table.search(text, query_type="fts", fts_columns=TEXT_COLUMN)
            .where(scope.sql(), prefilter=True)
            .select([*RESULT_COLUMNS, SCORE_COLUMN])
            .limit(limit)
        )
        result: pa.Table = query.to_arrow()
        return result

    def _refresh_text_index(self, view: ReadView) -> None:
        """The full-text index is not updated by writes: before a full-text search of a table
        that changed since the last refresh, fold the new rows in (optimize() updates every
        index incrementally). Skipped when a write holds the lock: the search is still right."""
        state = self._tables.states[view.collection]
        table = view.handle.table
        if table.version == state.text_index_version or state.active is not view.handle:
            return
        if not state.lock.acquire(blocking=False):
            return
        try:
            if state.active is view.handle and table.version != state.text_index_version:
                if unindexed_text_rows(table) > 0:
                    self._maintenance.optimize_locked(state, build_indexes=False)
                state.text_index_version = table.version
        finally:
            state.lock.release()

"""What the store tells whoever mirrors its tables (the in-memory search tier): every change
to a collection's active table, called inside the collection's lock right after the LanceDB
write succeeded, so the mirror changes in the same order as the table and never ahead of it.

A protocol of plain records (the written rows, the delete's predicate, table versions) rather
than an import of the mirror: the store depends on nothing above it, and a write that forgets
to call its hook is visible in review.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pyarrow as pa

from vector_service.store.filters import Scope
from vector_service.store.tables import Collection, TableHandle


class TableObserver(Protocol):
    def upserted(
        self, collection: Collection, handle: TableHandle, rows: pa.Table, version: int
    ) -> None:
        """`rows` (every column of the row schema) were merged into `handle`'s table by id,
        making table version `version`."""

    def deleted(
        self,
        collection: Collection,
        handle: TableHandle,
        scope: Scope,
        ids: Sequence[str],
        source_id: str,
        version: int,
    ) -> None:
        """The rows of `scope` with one of `ids` (or with `source_id`, or all of the scope
        when neither is given) were deleted from `handle`'s table, making version `version`."""

    def maintained(
        self, collection: Collection, handle: TableHandle, before: int, after: int
    ) -> None:
        """Compaction and index updates moved the table from `before` to `after` without
        changing its rows."""

    def replaced(self, collection: Collection) -> None:
        """The collection's active table was replaced (a reindex swap)."""

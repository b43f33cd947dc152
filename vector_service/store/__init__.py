"""The LanceDB side of the vector service: one table per collection, writes, searches, indexes,
maintenance and reindexing. VectorStore is the whole of it for callers; each part has its own
module:

- `rows`: the row of a collection table (columns, Arrow schema, the row builder), defined once.
- `filters`: SQL filter literals and the tenant scope.
- `catalog`: the `_loom_catalog` table (each collection's current table, reindex progress).
- `tables`: opening and creating tables, the vector space each records, refusing a mismatch,
  and every collection's state with its lock.
- `indexes`: the scalar, full-text and ANN indexes of a table.
- `hooks`: what the store tells a mirror of its tables (the search tier) about every change,
  inside the collection lock.
- `writes`: upsert (`merge_insert` on the id) and delete, serialized per collection.
- `reads`: listings, vector and full-text searches, lock-free.
- `maintenance`: optimize (compaction, index updates, pruning) on a schedule, ANN builds,
  dropping replaced tables.
- `reindex`: rebuilding a collection with another model beside the old table.
- `stats`: what GetCollectionStats reports.

Rules the package keeps:

- Every write to a collection's tables happens under that collection's lock: measured here,
  concurrent `merge_insert` of the same new keys from several writers silently made duplicate
  rows. Index builds, compaction and the reindex swap take the same lock. Searches never do.
- A table records the provider, model and dimensions of its vectors in its Arrow schema
  metadata, written when it is created. A write or vector search that would mix them with the
  configured model fails with FAILED_PRECONDITION naming the Reindex RPC.
- Which physical table holds a collection is recorded in the catalog table beside them, not
  in a local file, so the whole database can live at an object-store URI.
- Every change to a collection's active table is told to the store's observers (`hooks`)
  inside the lock, after the LanceDB write succeeded: the search tier mirrors the tables
  through them, in the order the table changed.
"""

from __future__ import annotations

import threading

from vector_service.store.catalog import ReindexProgress, ReindexState
from vector_service.store.filters import ID_PATTERN, Scope
from vector_service.store.hooks import TableObserver
from vector_service.store.maintenance import Maintenance
from vector_service.store.options import StoreOptions
from vector_service.store.reads import Reader, ReadView
from vector_service.store.reindex import Reindexer
from vector_service.store.rows import Document
from vector_service.store.stats import (
    CollectionStats,
    IndexSummary,
    VectorIndexState,
    collection_stats,
)
from vector_service.store.tables import Collection, TableHandle, Tables, VectorSpace
from vector_service.store.writes import UpsertOutcome, Writer

# The names callers use with VectorStore; a row's columns are in `rows`.
__all__ = [
    "ID_PATTERN",
    "Collection",
    "CollectionStats",
    "Document",
    "IndexSummary",
    "ReadView",
    "ReindexProgress",
    "ReindexState",
    "Scope",
    "StoreOptions",
    "TableHandle",
    "TableObserver",
    "UpsertOutcome",
    "VectorIndexState",
    "VectorSpace",
    "VectorStore",
]


class VectorStore:
    """Owns the LanceDB connection and every collection's tables. Thread-safe. Its operations
    are those of the parts, documented where they are defined."""

    def __init__(self, uri: str, configured: VectorSpace, options: StoreOptions) -> None:
        self.uri = uri
        self.configured = configured
        self.options = options
        self._stopping = threading.Event()
        self._tables = Tables(uri, configured, options.storage)
        # Told of every change of an active table, inside its lock (`hooks`).
        self._observers: list[TableObserver] = []
        self._maintenance = Maintenance(self._tables, options, self._stopping, self._observers)
        writer = Writer(self._tables, self._maintenance, self._observers)
        reader = Reader(self._tables, self._maintenance, options)
        self.upsert = writer.upsert
        self.delete = writer.delete
        self.locked_active = writer.locked_active
        self.list_documents = reader.list_documents
        self.read_view = reader.read_view
        self.mismatch_error = reader.mismatch_error
        self.vector_search = reader.vector_search
        self.text_search = reader.text_search
        self.optimize = self._maintenance.optimize
        self.reindex = Reindexer(self._tables, options, self._stopping, self._observers).reindex
        self.observe = self._observers.append

    def stats(self, collection: Collection) -> CollectionStats:
        return collection_stats(self._tables, self.options, collection)

    def start(self) -> None:
        """Starts the maintenance thread."""
        self._maintenance.start()

    def close(self) -> None:
        """Stops the maintenance thread and any reindex (at its next chunk), and drops the
        tables that reindexes replaced."""
        self._stopping.set()
        self._maintenance.stop()
        for state in self._tables.states.values():
            thread = state.reindex_thread
            if thread is not None:
                thread.join(timeout=60)
            with state.lock:
                self._maintenance.drop_retired(state, force=True)

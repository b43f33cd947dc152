"""What GetCollectionStats reports about a collection: its table, rows, vector space against
the configured one, fragments (what compaction works down), every index's coverage, and the
last reindex. Read without the collection lock."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from vector_service.store.catalog import ReindexProgress
from vector_service.store.options import StoreOptions
from vector_service.store.rows import VECTOR_COLUMN
from vector_service.store.tables import Collection, Tables, VectorSpace


@dataclass
class IndexSummary:
    name: str
    index_type: str
    columns: list[str]
    indexed_rows: int
    unindexed_rows: int


class VectorIndexState(Enum):
    UNSPECIFIED = "unspecified"
    NOT_NEEDED = "not_needed"
    PENDING = "pending"
    PARTIAL = "partial"
    READY = "ready"


@dataclass
class CollectionStats:
    collection: Collection
    table_name: str
    exists: bool
    row_count: int
    space: VectorSpace | None
    configured: VectorSpace
    table_version: int
    fragment_count: int
    small_fragment_count: int
    vector_index_state: VectorIndexState
    index_threshold_rows: int
    indexes: list[IndexSummary]
    reindex: ReindexProgress

    @property
    def model_matches(self) -> bool:
        return self.space is None or self.space.same_vectors(self.configured)


def collection_stats(
    tables: Tables, options: StoreOptions, collection: Collection
) -> CollectionStats:
    state = tables.states[collection]
    handle = state.active
    progress = state.progress.copy()
    if handle is None:
        return CollectionStats(
            collection=collection,
            table_name="",
            exists=False,
            row_count=0,
            space=None,
            configured=tables.configured,
            table_version=0,
            fragment_count=0,
            small_fragment_count=0,
            vector_index_state=VectorIndexState.UNSPECIFIED,
            index_threshold_rows=options.index_threshold_rows,
            indexes=[],
            reindex=progress,
        )
    table = handle.table
    rows = int(table.count_rows())
    table_stats = table.stats()
    fragments = table_stats["fragment_stats"]
    indexes: list[IndexSummary] = []
    for index in table.list_indices():
        index_stats = table.index_stats(index.name)
        indexes.append(
            IndexSummary(
                name=index.name,
                index_type=index_stats.index_type if index_stats else str(index.index_type),
                columns=list(index.columns),
                indexed_rows=int(index_stats.num_indexed_rows) if index_stats else 0,
                unindexed_rows=int(index_stats.num_unindexed_rows) if index_stats else 0,
            )
        )
    vector = next((i for i in indexes if i.columns == [VECTOR_COLUMN]), None)
    if vector is None:
        below = rows < options.index_threshold_rows
        index_state = VectorIndexState.NOT_NEEDED if below else VectorIndexState.PENDING
    else:
        ready = vector.unindexed_rows == 0
        index_state = VectorIndexState.READY if ready else VectorIndexState.PARTIAL
    return CollectionStats(
        collection=collection,
        table_name=handle.name,
        exists=True,
        row_count=rows,
        space=handle.space,
        configured=tables.configured,
        table_version=int(table.version),
        fragment_count=int(fragments["num_fragments"]),
        small_fragment_count=int(fragments["num_small_fragments"]),
        vector_index_state=index_state,
        index_threshold_rows=options.index_threshold_rows,
        indexes=indexes,
        reindex=progress,
    )

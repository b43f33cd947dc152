"""The indexes of a collection table: BTREE on the scalar columns that filters and lookups use,
the full-text index on the text, and the ANN index on the vectors once the table is large
enough for one to pay (below the threshold an exact scan is fast and has perfect recall).

Only the ANN build takes long (seconds), so it is never on a search's or a write's path: the
maintenance pass and the end of a reindex build it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Set
from typing import Any

from lancedb.index import FTS, BTree, IvfSq

from vector_service.store.options import StoreOptions
from vector_service.store.rows import SCALAR_INDEX_COLUMNS, TEXT_COLUMN, VECTOR_COLUMN

log = logging.getLogger(__name__)


def create_missing(table: Any, indexed: Set[tuple[str, ...]] = frozenset()) -> None:
    """Creates the scalar and full-text indexes whose columns are not in `indexed`. Made while
    a table is empty they cost nothing, and optimize() keeps them current."""
    for column in SCALAR_INDEX_COLUMNS:
        if (column,) not in indexed:
            table.create_index(column, config=BTree(), replace=True)
    if (TEXT_COLUMN,) not in indexed:
        table.create_index(TEXT_COLUMN, config=FTS(), replace=True)


def ensure_indexes(table: Any, name: str, options: StoreOptions) -> bool:
    """Creates missing indexes; builds the ANN index once the table is large enough.
    Returns whether the table has a vector index."""
    indexed = {tuple(i.columns) for i in table.list_indices()}
    create_missing(table, indexed)
    if (VECTOR_COLUMN,) in indexed:
        return True
    rows = table.count_rows()
    if rows < options.index_threshold_rows:
        return False
    partitions = max(1, math.ceil(rows / options.index_partition_rows))
    started = time.monotonic()
    table.create_index(
        VECTOR_COLUMN,
        config=IvfSq(distance_type="cosine", num_partitions=partitions),
        replace=True,
    )
    log.info(
        "built IVF_SQ index on %s: %d rows, %d partitions, %.1fs",
        name,
        rows,
        partitions,
        time.monotonic() - started,
    )
    return True


def has_vector_index(table: Any) -> bool:
    return any(list(i.columns) == [VECTOR_COLUMN] for i in table.list_indices())


def unindexed_text_rows(table: Any) -> int:
    """Rows the full-text index does not cover yet (all of them when there is no index)."""
    for index in table.list_indices():
        if list(index.columns) == [TEXT_COLUMN]:
            stats = table.index_stats(index.name)
            return int(stats.num_unindexed_rows) if stats is not None else 0
    return table.count_rows()  # type: ignore[no-any-return]

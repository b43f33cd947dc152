"""The row of a collection table, defined once: its columns, their Arrow schema, the column
groups that queries select, and the one function that builds rows from documents.

Every other module names a row's columns through these constants (the catalog is another
table, with its own).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Document:
    """What a caller upserts: the first columns of a row (DOCUMENT_COLUMNS)."""

    id: str
    team_id: str
    site_id: str
    environment_id: str
    source_id: str
    text: str

    @cached_property
    def sha256(self) -> str:
        return text_sha256(self.text)


ID_COLUMN = "id"
SCOPE_COLUMNS = ("team_id", "site_id", "environment_id")
SOURCE_COLUMN = "source_id"
TEXT_COLUMN = "text"
# The columns a Document fills (its fields, by the same names), in row order.
DOCUMENT_COLUMNS = (ID_COLUMN, *SCOPE_COLUMNS, SOURCE_COLUMN, TEXT_COLUMN)
# Filled by the store when it writes a row.
SHA_COLUMN = "text_sha256"
MODEL_COLUMN = "model"
VECTOR_COLUMN = "vector"
UPDATED_COLUMN = "updated_at"
COLUMNS = (*DOCUMENT_COLUMNS, SHA_COLUMN, MODEL_COLUMN, VECTOR_COLUMN, UPDATED_COLUMN)
_TIMESTAMP = pa.timestamp("us", tz="UTC")

# Where a document sits: a changed one is rewritten even when its text is the same.
PLACEMENT_COLUMNS = (*SCOPE_COLUMNS, SOURCE_COLUMN)
# text_sha256: an upsert looks up texts already embedded under other ids (see writes).
SCALAR_INDEX_COLUMNS = (ID_COLUMN, *PLACEMENT_COLUMNS, SHA_COLUMN)
# What an upsert compares with the stored row, and what a listing returns.
STORED_COLUMNS = [c for c in COLUMNS if c not in (TEXT_COLUMN, VECTOR_COLUMN, UPDATED_COLUMN)]
# Searches return these (never the vector).
RESULT_COLUMNS = [c for c in COLUMNS if c != VECTOR_COLUMN]
# What LanceDB adds to a vector search's and to a full-text search's results.
DISTANCE_COLUMN = "_distance"
SCORE_COLUMN = "_score"


def row_schema(dimensions: int) -> pa.Schema:
    """The Arrow schema of a collection table whose vectors have `dimensions` (without the
    schema metadata that records the model: tables.table_schema adds it)."""
    types = {
        VECTOR_COLUMN: pa.list_(pa.float32(), dimensions),
        UPDATED_COLUMN: _TIMESTAMP,
    }
    return pa.schema([pa.field(c, types.get(c, pa.string()), nullable=False) for c in COLUMNS])


def rows_table(
    schema: pa.Schema,
    docs: Sequence[Document],
    vectors: NDArray[np.float32],
    model: str,
    now: datetime,
) -> pa.Table:
    """The rows to write for `docs`, with their vectors (one per document, in order) made by
    `model`, stamped `now`, in the target table's `schema`."""
    dimensions = schema.field(VECTOR_COLUMN).type.list_size
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    values: dict[str, pa.Array] = {
        c: pa.array([getattr(d, c) for d in docs], pa.string()) for c in DOCUMENT_COLUMNS
    }
    values[SHA_COLUMN] = pa.array([d.sha256 for d in docs], pa.string())
    values[MODEL_COLUMN] = pa.array([model] * len(docs), pa.string())
    values[VECTOR_COLUMN] = pa.FixedSizeListArray.from_arrays(flat, dimensions)
    values[UPDATED_COLUMN] = pa.array([now] * len(docs), _TIMESTAMP)
    return pa.Table.from_arrays([values[c] for c in COLUMNS], schema=schema)


def holds(stored: dict[str, Any], doc: Document, model: str) -> bool:
    """Whether a stored row (STORED_COLUMNS) already holds `doc`, embedded by `model`."""
    return (
        stored[SHA_COLUMN] == doc.sha256
        and stored[MODEL_COLUMN] == model
        and all(stored[c] == getattr(doc, c) for c in PLACEMENT_COLUMNS)
    )


def vectors_of(column: pa.ChunkedArray, dimensions: int) -> NDArray[np.float32]:
    """A vector column read back as a (rows, dimensions) array."""
    if len(column) == 0:
        return np.empty((0, dimensions), dtype=np.float32)
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, dimensions)


def read_rows(table: Any, where: str | None, columns: list[str]) -> pa.Table:
    """Every row of `table` matching the SQL filter `where` (all rows for None), with only
    `columns`."""
    query = table.search()
    if where is not None:
        query = query.where(where)
    result: pa.Table = query.select(columns).limit(None).to_arrow()
    return result

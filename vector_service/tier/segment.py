"""One team's rows of one collection table, in memory: a float32 matrix of unit vectors and the
columns a search result carries, slot by slot.

A search reads a Snapshot, which no write ever changes: an upsert appends the new rows to
spare rows of the matrix buffer (beyond every older snapshot's size) and builds a new live
mask and a new column table (Arrow chunks are shared, not copied), then publishes the new
snapshot with one assignment. A replaced or deleted row's slot is only marked dead; once a
quarter of the slots are dead (or the columns have many small chunks) the segment is rebuilt
compactly. So searches never take a lock and never see half a write.

Cosine distance is 1 - dot product of unit vectors, as LanceDB computes it (`_distance`), and
the filters narrower than a team (site, environment) are masks over the slots: exact, like the
prefilter of the LanceDB query they replace.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from vector_service.store.filters import Scope
from vector_service.store.rows import (
    DISTANCE_COLUMN,
    ID_COLUMN,
    RESULT_COLUMNS,
    SCOPE_COLUMNS,
    SOURCE_COLUMN,
    VECTOR_COLUMN,
    row_schema,
    vectors_of,
)

_TEAM, _SITE, _ENVIRONMENT = SCOPE_COLUMNS
# Rebuild once this share of the slots is dead, or the columns have this many chunks (every
# upsert adds one; Arrow's take slows down with many).
_DEAD_SHARE = 0.25
_MAX_CHUNKS = 32
# What one id costs in the id -> slot dict beyond its characters: the str object's header,
# the int object of its slot, and its share of the dict's table (measured with sys.getsizeof
# on CPython 3.11: 49 + 28 + ~40 bytes).
_ID_OVERHEAD_BYTES = 120


def result_schema(dimensions: int) -> pa.Schema:
    """The columns a segment keeps per row: those a search returns (not the vector)."""
    full = row_schema(dimensions)
    return pa.schema([full.field(c) for c in RESULT_COLUMNS])


def unit_rows(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to length 1 (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: NDArray[np.float32] = (vectors / norms).astype(np.float32, copy=False)
    return out


@dataclass(frozen=True)
class Snapshot:
    """What a search reads: slots [0, size) of `matrix`, `rows` holding their columns in slot
    order, `live` marking the slots still current (None: all of them)."""

    matrix: NDArray[np.float32]  # (capacity, dimensions); rows past `size` are not ours
    size: int
    live: NDArray[np.bool_] | None
    live_count: int
    rows: pa.Table

    def search(self, query: NDArray[np.float32], scope: Scope, k: int) -> list[dict[str, Any]]:
        """The k nearest live rows within `scope` (a unit query vector), nearest first, as the
        LanceDB query's rows: RESULT_COLUMNS and DISTANCE_COLUMN."""
        if self.live_count == 0 or k <= 0:
            return []
        similarity = self.matrix[: self.size] @ query
        mask = self.live
        for column, value in ((_SITE, scope.site_id), (_ENVIRONMENT, scope.environment_id)):
            if value:
                match = pc.equal(self.rows.column(column), value)
                wanted = np.asarray(match.to_numpy(zero_copy_only=False), dtype=np.bool_)
                mask = wanted if mask is None else mask & wanted
        if mask is None:
            slots = _best(similarity, k)
        else:
            candidates = np.flatnonzero(mask)
            slots = candidates[_best(similarity[candidates], k)]
        if len(slots) == 0:
            return []
        found: list[dict[str, Any]] = self.rows.take(pa.array(slots)).to_pylist()
        distances = (1.0 - similarity[slots]).tolist()
        for row, distance in zip(found, distances, strict=True):
            row[DISTANCE_COLUMN] = distance
        return found


def _best(similarity: NDArray[np.float32], k: int) -> NDArray[np.intp]:
    """Positions of the k largest values, largest first."""
    if k >= len(similarity):
        return np.argsort(-similarity, kind="stable")
    top = np.argpartition(-similarity, k - 1)[:k]
    return top[np.argsort(-similarity[top], kind="stable")]


class Segment:
    """A team's rows of one table. Changed only by its tier, under the collection's lock (the
    one the table's writes hold); read through `snapshot` without any lock."""

    def __init__(self, team_id: str, dimensions: int, rows: pa.Table) -> None:
        """`rows`: the team's rows with RESULT_COLUMNS and VECTOR_COLUMN."""
        self.team_id = team_id
        self.dimensions = dimensions
        self._schema = result_schema(dimensions)
        vectors = unit_rows(vectors_of(rows.column(VECTOR_COLUMN), dimensions))
        self._slot_of: dict[str, int] = {}
        self.snapshot = self._build(vectors, self._columns(rows))

    @property
    def nbytes(self) -> int:
        """What the segment holds in memory: the matrix buffer (spare rows included), the
        columns, the live mask, and the id -> slot dict."""
        snap = self.snapshot
        ids = snap.rows.column(ID_COLUMN)
        id_bytes = sum(chunk.buffers()[2].size for chunk in ids.chunks if chunk.buffers()[2])
        live = snap.live.nbytes if snap.live is not None else 0
        return int(
            snap.matrix.nbytes
            + snap.rows.nbytes
            + live
            + sys.getsizeof(self._slot_of)
            + len(self._slot_of) * _ID_OVERHEAD_BYTES
            + id_bytes
        )

    @property
    def row_count(self) -> int:
        return self.snapshot.live_count

    def _columns(self, rows: pa.Table) -> pa.Table:
        return pa.Table.from_arrays([rows.column(c) for c in RESULT_COLUMNS], schema=self._schema)

    def _build(self, vectors: NDArray[np.float32], columns: pa.Table) -> Snapshot:
        size = len(vectors)
        capacity = size + max(16, size // 8)
        matrix = np.zeros((capacity, self.dimensions), dtype=np.float32)
        matrix[:size] = vectors
        columns = columns.combine_chunks()
        self._slot_of = {
            doc_id: slot for slot, doc_id in enumerate(columns.column(ID_COLUMN).to_pylist())
        }
        return Snapshot(matrix, size, None, size, columns)

    def upsert(self, rows: pa.Table, gone: Sequence[str]) -> None:
        """Puts `rows` (this team's, every row column) in, replacing rows of the same ids, and
        takes out the rows of the ids in `gone` (they moved to another team)."""
        snap = self.snapshot
        dead = [self._slot_of.pop(i) for i in gone if i in self._slot_of]
        new_ids: list[str] = rows.column(ID_COLUMN).to_pylist() if len(rows) else []
        dead += [self._slot_of.pop(i) for i in new_ids if i in self._slot_of]
        if not new_ids and not dead:
            return
        size, matrix = snap.size, snap.matrix
        added = len(new_ids)
        if size + added > len(matrix):
            grown = np.zeros((max(2 * len(matrix), size + added + 64), self.dimensions), np.float32)
            grown[:size] = matrix[:size]
            matrix = grown
        if added:
            matrix[size : size + added] = unit_rows(
                vectors_of(rows.column(VECTOR_COLUMN), self.dimensions)
            )
        live = np.ones(size + added, dtype=np.bool_)
        if snap.live is not None:
            live[:size] = snap.live
        live[dead] = False
        for offset, doc_id in enumerate(new_ids):
            self._slot_of[doc_id] = size + offset
        columns = pa.concat_tables([snap.rows, self._columns(rows)]) if added else snap.rows
        live_count = len(self._slot_of)
        self._publish(matrix, size + added, live, live_count, columns)

    def delete(self, scope: Scope, ids: Sequence[str], source_id: str) -> None:
        """Takes out the rows a DeleteDocuments of `scope` (this team) deletes: those of `ids`,
        or of `source_id`, or every row of the scope when neither is given."""
        snap = self.snapshot
        if snap.live_count == 0:
            return
        columns = snap.rows
        mask = np.ones(snap.size, dtype=np.bool_) if snap.live is None else snap.live.copy()
        for column, value in ((_SITE, scope.site_id), (_ENVIRONMENT, scope.environment_id)):
            if value:
                mask &= np.asarray(
                    pc.equal(columns.column(column), value).to_numpy(zero_copy_only=False)
                )
        if ids:
            chosen = pc.is_in(columns.column(ID_COLUMN), value_set=pa.array(list(ids), pa.string()))
            mask &= np.asarray(chosen.to_numpy(zero_copy_only=False))
        elif source_id:
            mask &= np.asarray(
                pc.equal(columns.column(SOURCE_COLUMN), source_id).to_numpy(zero_copy_only=False)
            )
        doomed = np.flatnonzero(mask)
        if len(doomed) == 0:
            return
        for doc_id in columns.take(pa.array(doomed)).column(ID_COLUMN).to_pylist():
            self._slot_of.pop(doc_id, None)
        live = np.ones(snap.size, dtype=np.bool_) if snap.live is None else snap.live.copy()
        live[doomed] = False
        self._publish(snap.matrix, snap.size, live, len(self._slot_of), columns)

    def _publish(
        self,
        matrix: NDArray[np.float32],
        size: int,
        live: NDArray[np.bool_],
        live_count: int,
        columns: pa.Table,
    ) -> None:
        dead = size - live_count
        if dead > _DEAD_SHARE * size or columns.column(ID_COLUMN).num_chunks > _MAX_CHUNKS:
            keep = np.flatnonzero(live)
            self.snapshot = self._build(matrix[keep], columns.take(pa.array(keep)))
            return
        self.snapshot = Snapshot(matrix, size, None if dead == 0 else live, live_count, columns)

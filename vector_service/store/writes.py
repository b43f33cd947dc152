"""Upserts and deletes, each under its collection's lock.

Measured here: concurrent `merge_insert` of the same new keys from several writers silently
made duplicate rows. So this process is the only writer of its tables, and the writes to one
collection run one at a time (searches never take the lock). Upserts are `merge_insert` on
the id; a text already embedded under any id costs no model call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from vector_service.embeddings import Embedder
from vector_service.errors import embed
from vector_service.store.filters import Scope, in_list, quote
from vector_service.store.hooks import TableObserver
from vector_service.store.maintenance import Maintenance
from vector_service.store.rows import (
    ID_COLUMN,
    MODEL_COLUMN,
    SHA_COLUMN,
    SOURCE_COLUMN,
    STORED_COLUMNS,
    VECTOR_COLUMN,
    Document,
    holds,
    read_rows,
    rows_table,
    vectors_of,
)
from vector_service.store.tables import (
    Collection,
    CollectionState,
    TableHandle,
    Tables,
    VectorSpace,
)


@dataclass(frozen=True)
class UpsertOutcome:
    created: int
    updated: int
    unchanged: int
    embedded: int
    space: VectorSpace


class Writer:
    def __init__(
        self, tables: Tables, maintenance: Maintenance, observers: list[TableObserver]
    ) -> None:
        self._tables = tables
        self._maintenance = maintenance
        self._observers = observers

    def _targets(self, state: CollectionState, space: VectorSpace) -> list[TableHandle]:
        """The tables an upsert writes, under the collection lock. During a reindex: the new
        table, plus the old one when it has the same model (so searches see the write)."""
        if state.staging is not None:
            targets = [state.staging]
            if state.active is not None and state.active.space.same_vectors(space):
                targets.append(state.active)
            return targets
        if state.active is None:
            state.generation = max(state.generation, 1)
            state.active = self._tables.create(state.collection, state.generation, space)
            state.has_vector_index = False
            self._tables.record(state)
            return [state.active]
        if not state.active.space.same_vectors(space):
            raise self._tables.mismatch(state.active)
        return [state.active]

    def upsert(
        self, collection: Collection, docs: Sequence[Document], embedder: Embedder
    ) -> UpsertOutcome:
        """Inserts or replaces documents. The whole call runs under the collection lock, model
        call included: upserts of one collection are processed one at a time, which is what
        makes "same id + same text = no model call, no new row" exact under concurrency."""
        space = VectorSpace.of(embedder)
        state = self._tables.states[collection]
        with state.lock:
            targets = self._targets(state, space)
            primary = targets[0]
            existing = read_rows(
                primary.table, in_list(ID_COLUMN, [d.id for d in docs]), STORED_COLUMNS
            )
            stored = {row[ID_COLUMN]: row for row in existing.to_pylist()}
            unchanged = created = updated = 0
            to_write: list[Document] = []
            texts: dict[str, str] = {}  # sha -> text, each distinct text looked up or embedded once
            for doc in docs:
                row = stored.get(doc.id)
                if row is None:
                    created += 1
                elif holds(row, doc, primary.space.model):
                    unchanged += 1
                    continue
                else:
                    updated += 1
                to_write.append(doc)
                texts.setdefault(doc.sha256, doc.text)
            missing: list[str] = []
            if to_write:
                # A document whose text did not change (new scope or source only) finds its
                # own stored vector here, like any text held under another id.
                by_sha = self._known_vectors(primary, texts)
                missing = [sha for sha in texts if sha not in by_sha]
                if missing:
                    fresh = embed(embedder, [texts[sha] for sha in missing])
                    by_sha.update(zip(missing, fresh, strict=True))
                vectors = np.stack([by_sha[d.sha256] for d in to_write])
                now = datetime.now(UTC)
                for target in targets:
                    batch = rows_table(target.table.schema, to_write, vectors, space.model, now)
                    result = (
                        target.table.merge_insert(ID_COLUMN)
                        .when_matched_update_all()
                        .when_not_matched_insert_all()
                        .execute(batch)
                    )
                    if target is state.active:  # what searches read, and the tier mirrors
                        for observer in self._observers:
                            observer.upserted(collection, target, batch, int(result.version))
                self._maintenance.note_writes(state, len(to_write))
            return UpsertOutcome(created, updated, unchanged, len(missing), primary.space)

    @staticmethod
    def _known_vectors(handle: TableHandle, shas: Iterable[str]) -> dict[str, NDArray[np.float32]]:
        """Vectors the table already holds for these texts (by sha256, same model), under
        any id and in any tenant: a vector is a function of the text and the model alone, so
        a cloned environment or a section repeated across pages costs no model call."""
        wanted = list(shas)
        if not wanted:
            return {}
        where = f"{in_list(SHA_COLUMN, wanted)} AND {MODEL_COLUMN} = {quote(handle.space.model)}"
        rows = read_rows(handle.table, where, [SHA_COLUMN, VECTOR_COLUMN])
        vectors = vectors_of(rows.column(VECTOR_COLUMN), handle.space.dimensions)
        return dict(zip(rows.column(SHA_COLUMN).to_pylist(), vectors, strict=True))

    def delete(
        self, collection: Collection, scope: Scope, ids: Sequence[str], source_id: str
    ) -> int:
        """Deletes by ids, by source id, or (neither given) everything within the scope.
        Allowed whatever the model: it mixes nothing, and keeps the index consistent with the
        content."""
        where = scope.sql()
        if ids:
            where += f" AND {in_list(ID_COLUMN, ids)}"
        elif source_id:
            where += f" AND {SOURCE_COLUMN} = {quote(source_id)}"
        state = self._tables.states[collection]
        with state.lock:
            deleted = 0
            for handle in (state.active, state.staging):
                if handle is not None:
                    result = handle.table.delete(where)
                    deleted = max(deleted, int(result.num_deleted_rows))
                    if handle is state.active:
                        version = int(result.version)
                        for observer in self._observers:
                            observer.deleted(collection, handle, scope, ids, source_id, version)
            if deleted:
                self._maintenance.note_writes(state, deleted)
            return deleted

    @contextmanager
    def locked_active(self, collection: Collection) -> Iterator[TableHandle | None]:
        """The collection's active table (None before its first write) with the collection
        lock held: no write, compaction, prune or reindex swap touches it meanwhile. What a
        backup pins the table's files under; keep the block short, writes wait for it."""
        state = self._tables.states[collection]
        with state.lock:
            yield state.active

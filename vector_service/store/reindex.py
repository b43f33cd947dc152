"""Reindex: rebuilding a collection with another model in a new table beside the old one, in
a background thread, because re-embedding a collection takes long and the collection must keep
answering meanwhile. Searches read the old table until the swap (one catalog write); writes
go to the new table (and to the old one too when its model is the same), and the copy never
resurrects a row deleted or rewritten after it was read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np

from servicekit.errors import Aborted, ServiceError
from vector_service.embeddings import Embedder
from vector_service.errors import embed
from vector_service.store.catalog import ReindexProgress, ReindexState
from vector_service.store.filters import in_list
from vector_service.store.hooks import TableObserver
from vector_service.store.indexes import ensure_indexes
from vector_service.store.maintenance import PRUNE_OLDER_THAN
from vector_service.store.options import StoreOptions
from vector_service.store.rows import (
    DOCUMENT_COLUMNS,
    ID_COLUMN,
    SHA_COLUMN,
    Document,
    read_rows,
    rows_table,
)
from vector_service.store.tables import (
    Collection,
    CollectionState,
    TableHandle,
    Tables,
    VectorSpace,
)

log = logging.getLogger(__name__)

REINDEX_CHUNK = 256


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Reindexer:
    def __init__(
        self,
        tables: Tables,
        options: StoreOptions,
        stopping: threading.Event,
        observers: list[TableObserver],
    ) -> None:
        self._tables = tables
        self._options = options
        self._stopping = stopping
        self._observers = observers

    def reindex(self, collection: Collection, embedder: Embedder) -> ReindexProgress:
        """Starts rebuilding the collection with `embedder` in a new table beside the old one
        and returns at once. Searches keep reading the old table until the swap; upserts meanwhile
        go to the new table (and to the old one too when its model is the same)."""
        space = VectorSpace.of(embedder)
        state = self._tables.states[collection]
        with state.lock:
            if state.staging is not None:
                return state.progress.copy()
            source = state.active
            now = time.time()
            if source is None:
                state.progress = ReindexProgress(
                    state=ReindexState.SUCCEEDED,
                    target_model=space.model,
                    target_dimensions=space.dimensions,
                    start_time=now,
                    end_time=now,
                )
                return state.progress.copy()
            generation = state.generation + 1
            staging = self._tables.create(collection, generation, space)
            ids = read_rows(source.table, None, [ID_COLUMN])
            id_list: list[str] = ids.column(ID_COLUMN).to_pylist()
            state.staging = staging
            state.progress = ReindexProgress(
                state=ReindexState.RUNNING,
                source_model=source.space.model,
                source_dimensions=source.space.dimensions,
                target_model=space.model,
                target_dimensions=space.dimensions,
                total_rows=len(id_list),
                start_time=now,
                target_table=staging.name,
            )
            self._tables.record(state)
            thread = threading.Thread(
                target=self._run,
                args=(state, source, staging, generation, id_list, embedder),
                name=f"reindex-{collection.value}",
                daemon=True,
            )
            state.reindex_thread = thread
            thread.start()
            log.info(
                "reindexing %s: %d rows from %s (%s) into %s (%s)",
                collection,
                len(id_list),
                source.name,
                source.space.model,
                staging.name,
                space.model,
            )
            return state.progress.copy()

    def _run(
        self,
        state: CollectionState,
        source: TableHandle,
        staging: TableHandle,
        generation: int,
        ids: list[str],
        embedder: Embedder,
    ) -> None:
        last_saved = time.monotonic()
        try:
            for chunk in _chunks(ids, REINDEX_CHUNK):
                if self._stopping.is_set():
                    raise Aborted("the server is shutting down; call Reindex again")
                rows = read_rows(source.table, in_list(ID_COLUMN, chunk), list(DOCUMENT_COLUMNS))
                docs = [Document(**row) for row in rows.to_pylist()]
                texts: dict[str, str] = {}
                for doc in docs:
                    texts.setdefault(doc.sha256, doc.text)
                shas = list(texts)
                by_sha = dict(zip(shas, embed(embedder, [texts[s] for s in shas]), strict=True))
                with state.lock:
                    if state.staging is not staging:
                        raise Aborted("the reindex was superseded")
                    # Rows deleted or rewritten since they were read are left out; rows an
                    # upsert already put into the new table are never overwritten.
                    current = read_rows(
                        source.table, in_list(ID_COLUMN, chunk), [ID_COLUMN, SHA_COLUMN]
                    )
                    still = {(r[ID_COLUMN], r[SHA_COLUMN]) for r in current.to_pylist()}
                    keep = [d for d in docs if (d.id, d.sha256) in still]
                    if keep:
                        vectors = np.stack([by_sha[d.sha256] for d in keep])
                        batch = rows_table(
                            staging.table.schema,
                            keep,
                            vectors,
                            staging.space.model,
                            datetime.now(UTC),
                        )
                        (
                            staging.table.merge_insert(ID_COLUMN)
                            .when_not_matched_insert_all()
                            .execute(batch)
                        )
                    state.progress.done_rows += len(chunk)
                    if time.monotonic() - last_saved >= 2.0:
                        self._tables.record(state)
                        last_saved = time.monotonic()
            with state.lock:
                if state.staging is not staging:
                    raise Aborted("the reindex was superseded")
                has_vector_index = ensure_indexes(staging.table, staging.name, self._options)
                staging.table.optimize(cleanup_older_than=PRUNE_OLDER_THAN)
                old = state.active
                state.active = staging
                state.staging = None
                state.generation = generation
                state.has_vector_index = has_vector_index
                state.text_index_version = staging.table.version
                state.pending_writes = 0
                state.progress.state = ReindexState.SUCCEEDED
                state.progress.end_time = time.time()
                self._tables.record(state)
                for observer in self._observers:
                    observer.replaced(state.collection)
                if old is not None:
                    state.retired.append((old.name, time.monotonic()))
            log.info("reindex of %s done: now %s", state.collection, staging.name)
        except Exception as exc:
            message = exc.message if isinstance(exc, ServiceError) else str(exc)
            if not isinstance(exc, Aborted):
                log.exception("reindex of %s failed", state.collection)
            with state.lock:
                if state.staging is staging:
                    state.staging = None
                    try:
                        self._tables.db.drop_table(staging.name)
                    except Exception:
                        log.exception("could not drop unfinished table %s", staging.name)
                state.progress.state = ReindexState.FAILED
                state.progress.error = message or type(exc).__name__
                state.progress.end_time = time.time()
                try:
                    self._tables.record(state)
                except Exception:
                    log.exception("could not record the failed reindex of %s", state.collection)

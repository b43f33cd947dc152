"""Upkeep of the collection tables: every write is a new table version, so a background pass
runs optimize() after enough writes or enough time (compaction, so small appends do not pile
up fragments; incremental index updates; pruning of old versions), builds the ANN index once
a table is large enough, and drops tables a reindex replaced once no search can still be
reading them.

All of it runs under the collection lock, the one every write takes: a backup pins a table's
files under that lock knowing that no compaction or prune removes any meanwhile (see
vector_service.backup).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from vector_service.store.hooks import TableObserver
from vector_service.store.indexes import ensure_indexes
from vector_service.store.options import StoreOptions
from vector_service.store.tables import Collection, CollectionState, Tables

log = logging.getLogger(__name__)

# Versions older than this are pruned by optimize(). Never 0: a search still reading an older
# version would lose its files.
PRUNE_OLDER_THAN = timedelta(minutes=30)
# A replaced table is dropped this long after a reindex swap, when no search can still be
# reading it.
RETIRE_AFTER_SECONDS = 60.0


class Maintenance:
    """The maintenance pass, and its thread once started."""

    def __init__(
        self,
        tables: Tables,
        options: StoreOptions,
        stopping: threading.Event,
        observers: list[TableObserver],
    ) -> None:
        self._tables = tables
        self._options = options
        self._observers = observers
        self._stopping = stopping
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def note_writes(self, state: CollectionState, count: int) -> None:
        """Counts rows written (under the lock): enough of them wake the pass early."""
        if state.pending_writes == 0:
            state.first_pending_at = time.monotonic()
        state.pending_writes += count
        if state.pending_writes >= self._options.maintenance_writes:
            self._wake.set()

    def optimize_locked(self, state: CollectionState, *, build_indexes: bool = True) -> None:
        handle = state.active
        if handle is None:
            return
        before = int(handle.table.version)
        if build_indexes:  # not on a search's path: an ANN build takes seconds
            state.has_vector_index = ensure_indexes(handle.table, handle.name, self._options)
        # Compaction (small appends do not pile up fragments), incremental index update
        # (new rows join the vector, scalar and full-text indexes), pruning of old versions.
        handle.table.optimize(cleanup_older_than=PRUNE_OLDER_THAN)
        state.text_index_version = after = int(handle.table.version)
        state.pending_writes = 0
        for observer in self._observers:
            observer.maintained(state.collection, handle, before, after)

    def optimize(self, collection: Collection) -> None:
        state = self._tables.states[collection]
        with state.lock:
            self.optimize_locked(state)
            self.drop_retired(state, force=False)

    def drop_retired(self, state: CollectionState, *, force: bool) -> None:
        keep: list[tuple[str, float]] = []
        for name, retired_at in state.retired:
            if force or time.monotonic() - retired_at >= RETIRE_AFTER_SECONDS:
                try:
                    self._tables.db.drop_table(name)
                    log.info("dropped replaced table %s", name)
                except Exception:
                    log.exception("could not drop replaced table %s", name)
            else:
                keep.append((name, retired_at))
        state.retired = keep

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="vector-maintenance", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Wakes the pass to see `stopping` (set by the caller) and waits for it to end."""
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=min(1.0, self._options.maintenance_seconds))
            self._wake.clear()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            for state in self._tables.states.values():
                due = state.pending_writes >= self._options.maintenance_writes or (
                    state.pending_writes > 0
                    and now - state.first_pending_at >= self._options.maintenance_seconds
                )
                try:
                    if due:
                        with state.lock:
                            self.optimize_locked(state)
                    if state.retired:
                        with state.lock:
                            self.drop_retired(state, force=False)
                except Exception:
                    # Maintenance is retried on the next round; a failure must not kill it.
                    log.exception("maintenance of %s failed", state.collection)
